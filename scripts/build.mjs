// Bundles the CLI into one file. better-sqlite3 carries a native addon, so it stays external
// and is resolved from node_modules (or from the Nix package's lib directory) at run time.
import { build } from 'esbuild';
import { readFileSync, writeFileSync } from 'node:fs';

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
  // Every process (each worker too) holds the bundle's source for its whole life, and its size
  // decides how much freed memory glibc keeps: Node reads the main script into a buffer that
  // doubles as it grows, and freeing that buffer raises glibc's trim threshold to twice its size.
  // Above 8 MiB (16 MiB buffer, 32 MiB threshold), the ~36 MiB that V8 takes once to compile
  // undici's WebAssembly HTTP parser stayed resident for good in half the starts or more (idle
  // RSS 130 instead of 94 MiB, measured); below, about 10 MiB of it does. Whitespace only, so names stay in stack traces; their positions map
  // back through ncps.cjs.map (node --enable-source-maps). test/unit/bundle.test.ts keeps it small.
  minifyWhitespace: true,
});

// V8 keeps a script's source for as long as its functions may still be compiled, i.e. for the
// life of the process. One character outside Latin-1 (a curly quote in a comment of a dependency)
// makes the whole bundle a two-byte string, twice the memory in every process. esbuild escapes
// strings but leaves legal comments and regular expressions as they are. A \uXXXX escape (of each
// UTF-16 unit) means the same there: a comment is not read, and a regular expression takes the
// escape as the character.
{
  const text = readFileSync('dist/ncps.cjs', 'utf8');
  const ascii = text.replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  if (ascii !== text) writeFileSync('dist/ncps.cjs', ascii);
}

// The manual page and the shell completions, made by the bundle from its option table: npm
// installs the page (package.json "man"), the Nix package both.
const { execFileSync } = await import('node:child_process');
const { mkdirSync } = await import('node:fs');
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
