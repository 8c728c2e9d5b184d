/**
 * What counts as a secret by its name, for the console. A column or JSON key
 * named like one is never loaded into a resource and is stripped from every
 * action's JSON (features/strip-secrets.ts), whatever the grants say: grants
 * are the first line of defence, names the second.
 *
 * Matches whole words of snake_case/camelCase names (password_hash, apiKey,
 * provider_token, webhook_secret, salt, cvc …), not substrings: `passage`,
 * `hashtag` or `tokens_used` are not secrets.
 */
const SECRET_WORDS = new Set([
  'password',
  'passwd',
  'passphrase',
  'secret',
  'token',
  'hash',
  'salt',
  'apikey',
  'privatekey',
  'pan',
  'cvc',
  'cvv',
  'otp',
  'totp',
  'credential',
  'credentials',
]);

/** Splits snake_case, kebab-case and camelCase into lower-case words, also joining word pairs (api_key → apikey). */
function words(name: string): string[] {
  const parts = name
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter(Boolean);
  const pairs = parts.slice(1).map((part, i) => `${parts[i]}${part}`);
  return [...parts, ...pairs];
}

export function isSecretName(name: string): boolean {
  return words(name).some((word) => SECRET_WORDS.has(word));
}

/** A flattened AdminJS param path (`payload.card.token`): secret if any segment is. */
export function isSecretPath(path: string): boolean {
  return path.split('.').some(isSecretName);
}
