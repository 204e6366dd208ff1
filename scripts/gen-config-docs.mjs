// Writes docs/configuration.md from the option table (run after `tsc`: npm run docs:config).
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { configurationReference } = require('../build/src/config/reference.js');
writeFileSync(new URL('../docs/configuration.md', import.meta.url), configurationReference());
