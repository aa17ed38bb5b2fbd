import { createServer, connect, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';

/** Controls a TCP proxy in front of a real server whose faults are switched on from a test. */
export interface FaultProxy {
  /** Port the proxy listens on (kept across refuse/accept and retarget). */
  port: number;
  /** `http://127.0.0.1:<port>` (https with TLS). */
  url: string;
  /** Connections accepted so far. */
  connections(): number;
  /** Connections open right now. */
  openConnections(): number;
  /** Resets that actually happened: armed by {@link FaultProxy.resetAfter} and fired, or done by {@link FaultProxy.resetAll}. */
  resetsFired(): number;
  /** Closes the listener and drops every connection: new connections are refused. */
  refuse(): Promise<void>;
  /** Listens again on the same port. */
  accept(): Promise<void>;
  /** Sends new connections to another server (a restarted one on a new port); open connections keep theirs. */
  retarget(target: string | number): void;
  /** Resets (TCP RST) the connection once `bytes` more response bytes have been forwarded; once. */
  resetAfter(bytes: number): void;
  /** Resets (TCP RST) every open connection now, requests in flight included. */
  resetAll(): void;
  /** Holds the next response bytes for `ms` before forwarding them (slow headers); once. */
  delayNext(ms: number): void;
  /** Delays every chunk, in both directions, by `ms` (0 turns it off); order is kept. */
  latency(ms: number): void;
  /** Stops forwarding in both directions; data waits until {@link FaultProxy.resume}. */
  pause(): void;
  /** Forwards everything held since {@link FaultProxy.pause}. */
  resume(): void;
  /** Pauses for `ms`, then resumes; resolves once forwarding runs again. */
  stall(ms: number): Promise<void>;
  /** Destroys every open connection (keep-alive sockets included). */
  dropConnections(): void;
  /** Turns every armed fault off (latency and a pause included). */
  clear(): void;
  close(): Promise<void>;
}

/** One direction of a connection: chunks wait here while paused or delayed, and leave in order. */
interface Lane {
  queue: Buffer[];
  busy: boolean;
  /** True for server → client, where resetAfter and delayNext apply. */
  down: boolean;
}

interface Pair {
  client: Socket;
  upstream: Socket;
  up: Lane;
  down: Lane;
  /** A reset is under way: nothing more is forwarded. */
  resetting: boolean;
}

/** Starts a TCP proxy on an ephemeral loopback port forwarding to `target` (a URL or port on 127.0.0.1); with `tls`, it terminates TLS. */
export async function startFaultProxy(target: string | number, options: { tls?: { key: string; cert: string } } = {}): Promise<FaultProxy> {
  const parseTarget = (t: string | number): { host: string; port: number } => {
    const url = typeof t === 'number' ? new URL(`http://127.0.0.1:${t}`) : new URL(t);
    return { port: Number(url.port || (url.protocol === 'https:' ? 443 : 80)), host: url.hostname.replace(/^\[|\]$/g, '') };
  };
  let upstreamAt = parseTarget(target);
  const pairs = new Set<Pair>();
  let accepted = 0;
  let resets = 0;
  let paused = false;
  let latencyMs = 0;
  let resetBudget: number | undefined;
  let delayMs: number | undefined;

  const onConnection = (client: Socket): void => {
    const upstream = connect(upstreamAt.port, upstreamAt.host);
    const pair: Pair = { client, upstream, up: { queue: [], busy: false, down: false }, down: { queue: [], busy: false, down: true }, resetting: false };
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
      pair.up.queue.push(chunk);
      pump(pair, pair.up);
    });
    upstream.on('data', (chunk: Buffer) => {
      pair.down.queue.push(chunk);
      pump(pair, pair.down);
    });
  };

  /** Forwards a lane's chunks in order, waiting while paused and for any latency or one-off delay. */
  const pump = (pair: Pair, lane: Lane): void => {
    while (!lane.busy && !paused && lane.queue.length > 0) {
      let wait = latencyMs;
      if (lane.down && delayMs !== undefined) {
        wait += delayMs;
        delayMs = undefined;
      }
      if (wait > 0) {
        lane.busy = true;
        const chunk = lane.queue.shift()!;
        setTimeout(() => {
          lane.busy = false;
          // Paused meanwhile: the chunk goes back to the head of the line.
          if (paused) lane.queue.unshift(chunk);
          else forward(pair, lane, chunk);
          pump(pair, lane);
        }, wait);
        return;
      }
      forward(pair, lane, lane.queue.shift()!);
    }
  };

  const forward = (pair: Pair, lane: Lane, chunk: Buffer): void => {
    if (pair.resetting) return;
    if (!lane.down) {
      if (!pair.upstream.destroyed) pair.upstream.write(chunk);
      return;
    }
    if (pair.client.destroyed) return;
    if (resetBudget !== undefined) {
      if (chunk.length >= resetBudget) {
        const head = chunk.subarray(0, resetBudget);
        resetBudget = undefined;
        resets += 1;
        pair.resetting = true;
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

  const resume = (): void => {
    paused = false;
    for (const pair of pairs) {
      pump(pair, pair.up);
      pump(pair, pair.down);
    }
  };

  return {
    port,
    url: `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    connections: () => accepted,
    openConnections: () => pairs.size,
    resetsFired: () => resets,
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
    retarget(next) {
      upstreamAt = parseTarget(next);
    },
    resetAfter(bytes) {
      resetBudget = bytes;
    },
    resetAll() {
      for (const pair of pairs) {
        resets += 1;
        pair.resetting = true;
        if (!pair.client.destroyed) pair.client.resetAndDestroy();
        pair.upstream.destroy();
      }
      pairs.clear();
    },
    delayNext(ms) {
      delayMs = ms;
    },
    latency(ms) {
      latencyMs = Math.max(0, ms);
    },
    pause() {
      paused = true;
    },
    resume,
    async stall(ms) {
      paused = true;
      await new Promise((r) => setTimeout(r, ms));
      resume();
    },
    dropConnections,
    clear() {
      resetBudget = undefined;
      delayMs = undefined;
      latencyMs = 0;
      resume();
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
