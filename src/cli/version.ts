// The release version, filled in by the bundler (scripts/build.mjs); 'dev' when run from tsc output.

declare const NCPS_VERSION: string | undefined;
export const VERSION = typeof NCPS_VERSION === 'string' ? NCPS_VERSION : 'dev';
