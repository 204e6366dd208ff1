// Bundles the CLI into one file. better-sqlite3 carries a native addon, so it stays external
// and is resolved from node_modules (or from the Nix package's lib directory) at run time.
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));

await build({
  entryPoints: ['src/cli/main.ts'],
  outfile: 'dist/ncps.cjs',
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: 'linked',
  external: ['better-sqlite3'],
  define: { NCPS_VERSION: JSON.stringify(pkg.version) },
  banner: { js: '#!/usr/bin/env node' },
  logLevel: 'warning',
});

// The manual page and the shell completions, made by the bundle from its option table: npm
// installs the page (package.json "man"), the Nix package both.
const { execFileSync } = await import('node:child_process');
const { mkdirSync, writeFileSync } = await import('node:fs');
const generated = {
  'dist/man/ncps.1': ['manpage'],
  'dist/completions/ncps.bash': ['completion', 'bash'],
  'dist/completions/_ncps': ['completion', 'zsh'],
  'dist/completions/ncps.fish': ['completion', 'fish'],
};
for (const [file, args] of Object.entries(generated)) {
  mkdirSync(new URL(`../${file.slice(0, file.lastIndexOf('/'))}`, import.meta.url), { recursive: true });
  writeFileSync(new URL(`../${file}`, import.meta.url), execFileSync(process.execPath, ['dist/ncps.cjs', ...args], { cwd: new URL('..', import.meta.url) }));
}
