/** The gateway API's error body, Stripe's shape: `{ error: { type, code, message } }` with an HTTP status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: 'invalid_request_error' | 'idempotency_error' | 'authentication_error' | 'api_error',
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
  body() {
    return { error: { type: this.type, code: this.code, message: this.message } };
  }
}
