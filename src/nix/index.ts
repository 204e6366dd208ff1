// Pure Nix protocol helpers: encodings, hashes, store paths, narinfo, signing.
export * from './nix32.js';
export * from './hash.js';
export * from './store-path.js';
export * from './compression.js';
export * from './narinfo.js';
export * from './signing.js';
export * from './realisation.js';
export * from './build-trace.js';
