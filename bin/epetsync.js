#!/usr/bin/env node
import { setFlagsFromString } from 'node:v8';

// `migrate` converts every row of the desktop database once and lets it go. With V8's default heap
// growth that garbage piles up (a 200k-row migrate peaked near 180 MB); tuned for size, the client
// stays near 120 MB for about a third more of its own CPU, which a one-off copy can spare. The flag
// must be set before the heap grows, so here, before anything else loads. docs/benchmarks.md.
if (process.argv.slice(2).includes('migrate')) setFlagsFromString('--optimize-for-size');

const { main } = await import('../dist/cli/main.js');
main(process.argv).then((code) => { process.exitCode = code; });
