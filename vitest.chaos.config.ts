import { defineConfig } from 'vitest/config';

// `npm run test:chaos` (scripts/chaos.mjs): the long version of the reliability suite in test/chaos/.
// The short version of the same files runs in the normal `npm test` (vitest.config.ts).
export default defineConfig({
  test: {
    include: ['test/chaos/**/*.test.ts'],
    testTimeout: 8 * 60_000,
    hookTimeout: 2 * 60_000,
    maxWorkers: 2,
    globalSetup: ['test/helpers/global-setup.ts'],
  },
});
