import { createServer, connect, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';

/** Controls a TCP proxy in front of a real server whose faults are switched on from a test. */
export interface FaultProxy {
  /** Port the proxy listens on (kept across refuse/accept). */
  port: number;
  /** `http://127.0.0.1:<port>` (https with TLS). */
  url: string;
  /** Connections accepted so far. */
  connections(): number;
  /** Closes the listener and drops every connection: new connections are refused. */
  refuse(): Promise<void>;
  /** Listens again on the same port. */
  accept(): Promise<void>;
  /** Resets (TCP RST) the connection once `bytes` more response bytes have been forwarded; once. */
  resetAfter(bytes: number): void;
  /** Holds the next response bytes for `ms` before forwarding them (slow headers); once. */
  delayNext(ms: number): void;
  /** Stops forwarding in both directions; data waits until {@link FaultProxy.resume}. */
  pause(): void;
  /** Forwards everything held since {@link FaultProxy.pause}. */
  resume(): void;
  /** Destroys every open connection (keep-alive sockets included). */
  dropConnections(): void;
  /** Turns every armed fault off. */
  clear(): void;
  close(): Promise<void>;
}

interface Pair {
  client: Socket;
  upstream: Socket;
  held: Array<() => void>;
}

/** Starts a TCP proxy on an ephemeral loopback port forwarding to `target` (a URL or port on 127.0.0.1); with `tls`, it terminates TLS. */
export async function startFaultProxy(target: string | number, options: { tls?: { key: string; cert: string } } = {}): Promise<FaultProxy> {
  const targetUrl = typeof target === 'number' ? new URL(`http://127.0.0.1:${target}`) : new URL(target);
  const targetPort = Number(targetUrl.port || (targetUrl.protocol === 'https:' ? 443 : 80));
  const targetHost = targetUrl.hostname.replace(/^\[|\]$/g, '');
  const pairs = new Set<Pair>();
  let accepted = 0;
  let paused = false;
  let resetBudget: number | undefined;
  let delayMs: number | undefined;

  const onConnection = (client: Socket): void => {
    const upstream = connect(targetPort, targetHost);
    const pair: Pair = { client, upstream, held: [] };
    pairs.add(pair);
    const finish = (): void => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', finish);
    upstream.on('error', finish);
    client.on('close', finish);
    upstream.on('close', finish);
    client.on('data', (chunk: Buffer) => {
      const send = (): void => {
        if (!upstream.destroyed) upstream.write(chunk);
      };
      if (paused) pair.held.push(send);
      else send();
    });
    upstream.on('data', (chunk: Buffer) => {
      const send = (): void => downstream(pair, chunk);
      if (paused) pair.held.push(send);
      else send();
    });
  };

  const downstream = (pair: Pair, chunk: Buffer): void => {
    if (pair.client.destroyed) return;
    if (delayMs !== undefined) {
      const ms = delayMs;
      delayMs = undefined;
      pair.upstream.pause();
      setTimeout(() => {
        pair.upstream.resume();
        downstream(pair, chunk);
      }, ms);
      return;
    }
    if (resetBudget !== undefined) {
      if (chunk.length >= resetBudget) {
        const head = chunk.subarray(0, resetBudget);
        resetBudget = undefined;
        pair.upstream.pause();
        // Let the client read what was sent first: a RST discards data still unread in its kernel buffer.
        pair.client.write(head, () =>
          setTimeout(() => {
            pair.client.resetAndDestroy();
            pair.upstream.destroy();
          }, 100),
        );
        return;
      }
      resetBudget -= chunk.length;
    }
    pair.client.write(chunk);
  };

  const newServer = (): Server => {
    const created = options.tls ? createTlsServer(options.tls, onConnection) : createServer(onConnection);
    // Counted at TCP accept, so a TLS handshake that fails still counts as a connection.
    created.on('connection', () => {
      accepted += 1;
    });
    return created;
  };
  let server: Server = newServer();
  const listen = (port: number): Promise<number> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        const address = server.address();
        resolve(typeof address === 'object' && address ? address.port : port);
      });
    });
  const port = await listen(0);

  const dropConnections = (): void => {
    for (const pair of pairs) {
      pair.client.destroy();
      pair.upstream.destroy();
    }
    pairs.clear();
  };

  return {
    port,
    url: `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    connections: () => accepted,
    async refuse() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        dropConnections();
      });
    },
    async accept() {
      server = newServer();
      await listen(port);
    },
    resetAfter(bytes) {
      resetBudget = bytes;
    },
    delayNext(ms) {
      delayMs = ms;
    },
    pause() {
      paused = true;
    },
    resume() {
      paused = false;
      for (const pair of pairs) {
        const held = pair.held.splice(0);
        for (const send of held) send();
      }
    },
    dropConnections,
    clear() {
      resetBudget = undefined;
      delayMs = undefined;
      paused = false;
    },
    async close() {
      dropConnections();
      await new Promise<void>((resolve) => {
        if (!server.listening) resolve();
        else server.close(() => resolve());
      });
    },
  };
}
