/**
 * Test doubles that are real servers: an HTTP receiver for outgoing webhooks
 * (it records every request with its raw body and answers as a test tells
 * it, per path), and an SMTP server (smtp-server) that keeps every message,
 * parsed by mailparser.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { simpleParser, type ParsedMail } from 'mailparser';
import { SMTPServer } from 'smtp-server';

export interface ReceivedWebhook {
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  json: { id: string; type: string; created: number; data: Record<string, any>; livemode: boolean };
}

/** How the receiver answers the n-th request (1-based) to a path. */
export type Answer = (n: number) => { status: number; delayMs?: number; headers?: Record<string, string>; body?: string };

export interface WebhookReceiver {
  url(path: string): string;
  /** Requests received on a path (or all), in order. */
  received(path?: string): ReceivedWebhook[];
  answer(path: string, answer: Answer): void;
  close(): Promise<void>;
}

export async function startWebhookReceiver(): Promise<WebhookReceiver> {
  const requests: ReceivedWebhook[] = [];
  const answers = new Map<string, Answer>();
  const timers = new Set<NodeJS.Timeout>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      const body = Buffer.concat(chunks).toString('utf8');
      let json: ReceivedWebhook['json'];
      try {
        json = JSON.parse(body);
      } catch {
        json = {} as ReceivedWebhook['json'];
      }
      requests.push({ path, headers: req.headers, body, json });
      const n = requests.filter((r) => r.path === path).length;
      const answer: Answer = answers.get(path) ?? (() => ({ status: 200 }));
      const { status, delayMs = 0, headers = {}, body: answerBody = 'ok' } = answer(n);
      const send = () => {
        if (res.destroyed) return;
        res.writeHead(status, { 'content-type': 'text/plain', ...headers });
        res.end(answerBody);
      };
      if (delayMs > 0) {
        const timer = setTimeout(() => {
          timers.delete(timer);
          send();
        }, delayMs);
        timers.add(timer);
      } else send();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: (path) => `http://127.0.0.1:${port}${path}`,
    received: (path) => requests.filter((r) => path === undefined || r.path === path),
    answer: (path, answer) => answers.set(path, answer),
    close: async () => {
      for (const t of timers) clearTimeout(t);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export interface ReceivedMail {
  envelopeTo: string[];
  parsed: ParsedMail;
}

export interface MailSink {
  url: string;
  messages: ReceivedMail[];
  close(): Promise<void>;
}

/** A real SMTP server on a free port (no TLS, any credentials), keeping what it receives. */
export async function startMailSink(): Promise<MailSink> {
  const messages: ReceivedMail[] = [];
  const server = new SMTPServer({
    secure: false,
    disabledCommands: ['STARTTLS'],
    authOptional: true,
    allowInsecureAuth: true,
    logger: false,
    onAuth(_auth, _session, callback) {
      callback(null, { user: 'test' });
    },
    onData(stream, session, callback) {
      simpleParser(stream)
        .then((parsed) => {
          messages.push({ envelopeTo: session.envelope.rcptTo.map((r) => r.address), parsed });
          callback();
        })
        .catch(callback);
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.server.address() as AddressInfo;
  return {
    url: `smtp://mailer:secret-password@127.0.0.1:${port}`,
    messages,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
