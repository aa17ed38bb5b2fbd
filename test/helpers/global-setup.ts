import pg from 'pg';
import { adminUrl } from './pg.js';

/**
 * Checks once, before any test, that the real PostgreSQL server answers. PostgreSQL tests never
 * skip themselves: an unreachable server fails the run with the command that starts it.
 */
export default async function setup(): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl(), connectionTimeoutMillis: 5000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
  } catch (error) {
    throw new Error(
      `PostgreSQL is not reachable at ${adminUrl().replace(/:[^:@/]*@/, '@')} (${(error as Error).message}). ` +
        'Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start',
    );
  } finally {
    await client.end().catch(() => {});
  }
}
