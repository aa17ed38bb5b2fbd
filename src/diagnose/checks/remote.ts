import { lookup } from 'node:dns/promises';
import { isIP, connect as netConnect } from 'node:net';
import { connect as tlsConnect, type PeerCertificate } from 'node:tls';
import { readState, stateFilePath, type DiscoveryResult, type ServerInfo } from '../../client/index.js';
import { isEpetsyncError } from '../../errors.js';
import type { DiagnoseContext } from '../context.js';
import { failure } from '../runner.js';
import type { Check, CheckOutcome } from '../types.js';

const TIMEOUT_MS = 5000;

function target(ctx: DiagnoseContext): { url: URL; host: string; port: number } {
  const url = new URL(ctx.config().remote.url!);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return { url, host, port: Number(url.port || (url.protocol === 'https:' ? 443 : 80)) };
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function tcpConnect(host: string, port: number): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host, port, timeout: TIMEOUT_MS });
    socket.once('connect', () => {
      socket.destroy();
      resolve(performance.now() - started);
    });
    socket.once('timeout', () => {
      socket.destroy();
      reject(Object.assign(new Error(`no answer within ${TIMEOUT_MS} ms`), { code: 'ETIMEDOUT' }));
    });
    socket.once('error', (error) => {
      socket.destroy();
      reject(error);
    });
  });
}

function tlsHandshake(host: string, port: number, insecure: boolean): Promise<{ authorized: boolean; error: string | null; cert: PeerCertificate; protocol: string | null }> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host, port, servername: isIP(host) ? undefined : host, rejectUnauthorized: false, timeout: TIMEOUT_MS });
    socket.once('secureConnect', () => {
      const out = { authorized: socket.authorized || insecure, error: socket.authorizationError ? String(socket.authorizationError) : null, cert: socket.getPeerCertificate(), protocol: socket.getProtocol() };
      socket.destroy();
      resolve(out);
    });
    socket.once('timeout', () => {
      socket.destroy();
      reject(new Error(`TLS handshake did not finish within ${TIMEOUT_MS} ms`));
    });
    socket.once('error', (error) => {
      socket.destroy();
      reject(error);
    });
  });
}

/** Returns the server info read by auth.permission during this pass, if it got that far. */
export function serverInfo(ctx: DiagnoseContext): ServerInfo | undefined {
  return ctx.memo.get('server.info') as ServerInfo | undefined;
}

/** Lists the network group: DNS, TCP connect, TLS handshake and certificate expiry, latency. */
export const NETWORK_CHECKS: Check[] = [
  {
    id: 'net.dns',
    group: 'network',
    title: 'server name resolves',
    needs: ['config.https'],
    async run(ctx) {
      const { host } = target(ctx);
      if (isIP(host)) return { status: 'ok', found: `${host} is an address (no lookup needed)` };
      try {
        const addresses = await withTimeout(lookup(host, { all: true }), TIMEOUT_MS, `DNS lookup of ${host}`);
        return { status: 'ok', found: `${host} → ${addresses.map((a) => a.address).join(', ')}`, data: { addresses: addresses.map((a) => a.address) } };
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
        return { status: 'fail', found: `${host} does not resolve (${code})`, remedy: 'Check remote_database.url for a typo, and this machine\'s DNS and internet access.', data: { host, code } };
      }
    },
  },
  {
    id: 'net.tcp',
    group: 'network',
    title: 'TCP connect',
    needs: ['net.dns'],
    async run(ctx) {
      const { host, port } = target(ctx);
      try {
        const ms = await tcpConnect(host, port);
        return { status: 'ok', found: `${host}:${port} accepts connections (${Math.round(ms)} ms)`, data: { connectMs: Math.round(ms) } };
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code ?? '';
        const found = code === 'ECONNREFUSED' ? `${host}:${port} refused the connection: nothing is listening there` : `cannot connect to ${host}:${port} (${code || (error as Error).message})`;
        const remedy = code === 'ECONNREFUSED'
          ? 'Check the server is running (epetsync serve, or the web app on Render is awake) and the port in remote_database.url is right.'
          : 'Check the firewall, proxy and internet access of this machine, and that the server is up.';
        return { status: 'fail', found, remedy, data: { host, port, code } };
      }
    },
  },
  {
    id: 'net.tls',
    group: 'network',
    title: 'TLS handshake and certificate',
    needs: ['net.tcp'],
    async run(ctx) {
      const { url, host, port } = target(ctx);
      if (url.protocol !== 'https:') return { status: 'skipped', found: 'plain http: no TLS to check' };
      let r;
      try {
        r = await tlsHandshake(host, port, ctx.config().remote.insecureTls);
      } catch (error) {
        return { status: 'fail', found: `TLS handshake with ${host}:${port} failed: ${(error as Error).message}`, remedy: 'Check that the URL\'s port serves https, and any TLS-intercepting proxy.' };
      }
      const expires = Date.parse(r.cert.valid_to ?? '');
      const days = (expires - ctx.now().getTime()) / 86_400_000;
      const data = { protocol: r.protocol, subject: r.cert.subject?.CN ?? null, issuer: r.cert.issuer?.CN ?? null, validTo: Number.isFinite(expires) ? new Date(expires).toISOString() : null, daysLeft: Number.isFinite(days) ? Math.floor(days) : null };
      if (!r.authorized) return { status: 'fail', found: `the certificate of ${host} is not trusted (${r.error})`, remedy: 'Renew or fix the server certificate; for a self-signed test server only, set remote_database.insecure_tls.', data };
      if (Number.isFinite(days) && days < 0) return { status: 'fail', found: `the certificate of ${host} expired on ${data.validTo}`, remedy: 'Renew the server certificate.', data };
      if (Number.isFinite(days) && days < 14) return { status: 'warn', found: `the certificate of ${host} expires in ${Math.floor(days)} day(s)`, remedy: 'Renew the server certificate soon.', data };
      return { status: 'ok', found: `${r.protocol}, certificate valid ${Math.floor(days)} more days${ctx.config().remote.insecureTls ? ' (verification is OFF: insecure_tls)' : ''}`, data };
    },
  },
  {
    id: 'net.latency',
    group: 'network',
    title: 'latency',
    needs: ['net.tcp'],
    async run(ctx) {
      const { url } = target(ctx);
      const times: number[] = [];
      let status = 0;
      for (let i = 0; i < 3; i += 1) {
        const started = performance.now();
        try {
          const res = await fetch(new URL('/healthz', url), { signal: AbortSignal.timeout(TIMEOUT_MS), redirect: 'manual' });
          await res.arrayBuffer();
          status = res.status;
        } catch (error) {
          return { status: 'warn', found: `no answer to GET /healthz: ${(error as Error).message}`, remedy: 'The server accepts connections but does not answer HTTP in time: check it is not overloaded or asleep.' };
        }
        times.push(performance.now() - started);
      }
      const median = [...times].sort((a, b) => a - b)[1]!;
      const data = { medianMs: Math.round(median), samplesMs: times.map((t) => Math.round(t)), healthzStatus: status };
      if (median > 2000) return { status: 'warn', found: `median round trip ${Math.round(median)} ms`, remedy: 'The connection is slow: sync will work but cycles take long; check the network, or a sleeping Render instance.', data };
      return { status: 'ok', found: `median round trip ${Math.round(median)} ms`, data };
    },
  },
];

function isLegacy(error: unknown): boolean {
  return isEpetsyncError(error) && error.code === 'EPS_PROTOCOL_LEGACY_STUB';
}

/** Lists the API group: endpoints discovered, cached endpoint current, legacy stub recognised, protocol compatible. */
export const API_CHECKS: Check[] = [
  {
    id: 'api.discovery',
    group: 'api',
    title: 'sync API discovered',
    needs: ['net.tcp'],
    async run(ctx) {
      try {
        const found: DiscoveryResult = await ctx.client().discover({ force: true });
        ctx.memo.set('api.discovery', found);
        return { status: 'ok', found: `${found.base} (via ${found.source})`, data: { base: found.base, source: found.source, endpoints: found.endpoints } };
      } catch (error) {
        ctx.memo.set('api.discoveryError', error);
        if (isLegacy(error)) {
          return { status: 'fail', found: (error as Error).message, remedy: 'The server is the old Django stub: deploy the epetsync sync API (epetsync serve beside the web app) and point remote_database.url at it.', data: { code: 'EPS_PROTOCOL_LEGACY_STUB', legacy: true } };
        }
        return failure(error);
      }
    },
  },
  {
    id: 'api.legacy-stub',
    group: 'api',
    title: 'not the legacy Django stub',
    needs: ['net.tcp'],
    async run(ctx) {
      const error = ctx.memo.get('api.discoveryError');
      if (isLegacy(error)) return { status: 'fail', found: 'the server answers like the legacy Django sync stub (sync_method, no protocol): it cannot sync rows', remedy: 'Deploy the epetsync sync API on the server (epetsync serve over the web app\'s PostgreSQL) and point remote_database.url at it.', data: { legacy: true } };
      if (ctx.memo.has('api.discovery')) return { status: 'ok', found: 'an epetsync sync API, not the legacy stub', data: { legacy: false } };
      return { status: 'skipped', found: 'no API answered (see api.discovery)' };
    },
  },
  {
    id: 'api.cache',
    group: 'api',
    title: 'cached endpoint current',
    needs: ['api.discovery'],
    async run(ctx) {
      const found = ctx.memo.get('api.discovery') as DiscoveryResult;
      let cached;
      try {
        cached = readState(stateFilePath(ctx.config().dir)).endpoint;
      } catch (error) {
        return failure(error);
      }
      if (!cached) return { status: 'warn', found: 'no endpoint cached yet: the next run probes the server first', remedy: 'Run "epetsync diagnose --fix" to cache it.', data: { cached: null } };
      if (cached.url !== ctx.client().url.href || cached.base !== found.base) {
        return { status: 'warn', found: `the cached endpoint ${cached.base} (for ${cached.url}) is not what the server offers now (${found.base})`, remedy: 'Run "epetsync diagnose --fix" to re-discover and cache it.', data: { cached: cached.base, discovered: found.base } };
      }
      return { status: 'ok', found: `${cached.base}, cached ${cached.discoveredAt}`, data: { cached: cached.base } };
    },
    fix: {
      async apply(ctx) {
        const { RemoteDatabaseClient } = await import('../../client/index.js');
        const client = RemoteDatabaseClient.fromConfig(ctx.config(), { logger: ctx.options.logger, retries: 1 });
        try {
          const found = await client.discover({ force: true });
          return `re-discovered the sync API at ${found.base} and cached it`;
        } finally {
          await client.close();
        }
      },
    },
  },
  {
    id: 'api.protocol',
    group: 'api',
    title: 'protocol compatible',
    needs: ['api.discovery'],
    async run(ctx) {
      const found = ctx.memo.get('api.discovery') as DiscoveryResult;
      const { PROTOCOL_VERSION } = await import('../../client/index.js');
      if (found.serverIdentity === null) return { status: 'ok', found: `the API wants a token before it says its version (checked again by auth.permission)` };
      const id = found.serverIdentity;
      if (id.protocol !== PROTOCOL_VERSION) return { status: 'fail', found: `${id.service} ${id.serverVersion} speaks protocol ${id.protocol}, this epetsync speaks ${PROTOCOL_VERSION}`, remedy: 'Update epetsync (or the server) so both speak the same protocol.' };
      return { status: 'ok', found: `${id.service} ${id.serverVersion}, protocol ${id.protocol}`, data: { ...id } };
    },
  },
];

/** Lists the auth group: login works, token expiry, permission to sync. */
export const AUTH_CHECKS: Check[] = [
  {
    id: 'auth.login',
    group: 'auth',
    title: 'login works',
    needs: ['api.discovery', 'config.credentials'],
    async run(ctx): Promise<CheckOutcome> {
      try {
        const r = await ctx.client().authenticate({ force: true });
        ctx.memo.set('auth.login', r);
        return { status: 'ok', found: r.source === 'config' ? 'the configured token is accepted' : `logged in as ${ctx.config().remote.username}`, data: { source: r.source, expiresAt: r.expiresAt } };
      } catch (error) {
        // The password was right; whether the account may sync is auth.permission's finding.
        if (isEpetsyncError(error) && error.code === 'EPS_AUTH_FORBIDDEN') {
          ctx.memo.set('auth.forbidden', error);
          return { status: 'ok', found: `the credentials of ${ctx.config().remote.username ?? 'the account'} are accepted (but see auth.permission)` };
        }
        return failure(error);
      }
    },
  },
  {
    id: 'auth.token-expiry',
    group: 'auth',
    title: 'token expiry',
    needs: ['auth.login'],
    async run(ctx) {
      const login = ctx.memo.get('auth.login') as { source: string; expiresAt: string | null } | undefined;
      if (login === undefined) return { status: 'skipped', found: 'no token was issued (see auth.permission)' };
      if (login.source === 'config') {
        if (ctx.config().remote.password !== undefined) return { status: 'ok', found: 'a configured token; the password renews access when it expires' };
        return { status: 'ok', found: 'a configured token (its expiry is shown by auth.permission when the server refuses it)' };
      }
      if (login.expiresAt === null) return { status: 'ok', found: 'the server issues tokens without expiry' };
      const hours = (Date.parse(login.expiresAt) - ctx.now().getTime()) / 3_600_000;
      if (hours < 0.1) return { status: 'warn', found: `tokens expire after ${Math.round(hours * 60)} min: every cycle logs in again`, remedy: 'Raise the server\'s token lifetime.', data: { expiresAt: login.expiresAt } };
      return { status: 'ok', found: `tokens are valid until ${login.expiresAt} and renewed with the password`, data: { expiresAt: login.expiresAt } };
    },
  },
  {
    id: 'auth.permission',
    group: 'auth',
    title: 'permission to sync',
    needs: ['auth.login'],
    async run(ctx) {
      try {
        const refused = ctx.memo.get('auth.forbidden');
        if (refused !== undefined) throw refused;
        const info = await ctx.client().info();
        ctx.memo.set('server.info', info);
        ctx.memo.set('api.tables', info.tables.map((t) => t.name));
        return { status: 'ok', found: `may sync ${info.tables.length} table(s) (${info.service} ${info.server_version}, protocol ${info.protocol})`, data: { tables: info.tables.map((t) => t.name) } };
      } catch (error) {
        if (isEpetsyncError(error) && error.code === 'EPS_AUTH_FORBIDDEN') {
          return { status: 'fail', found: error.message, remedy: error.hint ?? 'Give the account the sync permission (staff in Django admin) or use another account.', data: { code: error.code, ...(error.details ?? {}) } };
        }
        return failure(error);
      }
    },
  },
];
