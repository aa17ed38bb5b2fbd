import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * Answers one request of a hostile or broken HTTP server, for what the real `epetsync serve` cannot be made to do
 * (a legacy stub, a malformed body, a 503 with Retry-After, a missing first discovery path).
 * A handler returns true when it answered; otherwise the request is forwarded to `forwardTo`
 * (the real server) or answered 404 with a protocol error body.
 */
export type FakeHandler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => boolean | Promise<boolean>;

/** Describes a running fake server and the requests it saw. */
export interface FakeServer {
  url: string;
  port: number;
  /** Method, path and headers of every request, in order. */
  requests: Array<{ method: string; path: string; headers: IncomingMessage['headers'] }>;
  close(): Promise<void>;
}

/** Starts a fake on an ephemeral loopback port. */
export async function startFakeServer(handler: FakeHandler, options: { forwardTo?: string } = {}): Promise<FakeServer> {
  const requests: FakeServer['requests'] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      requests.push({ method: req.method ?? 'GET', path: req.url ?? '/', headers: req.headers });
      Promise.resolve(handler(req, res, body))
        .then((answered) => {
          if (answered) return;
          if (options.forwardTo) forward(req, res, body, options.forwardTo);
          else sendJson(res, 404, { error: { code: 'NOT_FOUND', message: 'no such route', request_id: 'fake-404' } });
        })
        .catch((error: unknown) => {
          res.destroy(error instanceof Error ? error : new Error(String(error)));
        });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Answers `status` with a JSON body and optional headers. */
export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): true {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'x-request-id': 'fake-1', ...headers });
  res.end(text);
  return true;
}

function forward(req: IncomingMessage, res: ServerResponse, body: Buffer, target: string): void {
  const url = new URL(req.url ?? '/', target);
  const headers = { ...req.headers, host: url.host };
  delete headers['content-length'];
  const upstream = httpRequest(url, { method: req.method, headers: { ...headers, 'content-length': String(body.length) } }, (answer) => {
    res.writeHead(answer.statusCode ?? 502, answer.headers);
    answer.pipe(res);
  });
  upstream.on('error', () => res.destroy());
  upstream.end(body);
}
