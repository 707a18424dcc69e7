// Bundles src/producer.ts with the real Chronow source
// (third_party/chronow/src) and its npm dependencies into one file:
// <repo>/bin/chronow-interop.cjs. Run by `make chronow-interop`.
import { build } from 'esbuild';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? join(here, '..', '..', 'bin', 'chronow-interop.cjs');

await build({
  entryPoints: [join(here, 'src', 'producer.ts')],
  outfile: out,
  bundle: true,
  platform: 'node',
  target: 'node18',
  format: 'cjs',
  // Chronow's sources live outside this project: resolve their imports
  // (ioredis, mongodb) from this project's node_modules.
  nodePaths: [join(here, 'node_modules')],
  // mongodb's optional native add-ons, loaded in try/catch only when
  // configured; Chronow never configures them.
  external: [
    'kerberos', '@mongodb-js/zstd', '@aws-sdk/credential-providers', 'gcp-metadata',
    'snappy', 'socks', 'aws4', 'mongodb-client-encryption',
  ],
  logLevel: 'warning',
  // Chronow's package.json lists "types" after "import"/"require" (harmless).
  logOverride: { 'package.json': 'silent' },
});
