import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { it } from 'node:test';
import { configurationReference } from '../../src/config/reference';
import { OPTIONS } from '../../src/config/options';

const docs = path.join(__dirname, '../../../docs/configuration.md');

it('docs/configuration.md is what the option table generates (run `npm run docs:config`)', () => {
  assert.equal(readFileSync(docs, 'utf8'), configurationReference());
});

it('the reference names every flag, variable and key', () => {
  const text = configurationReference();
  for (const option of OPTIONS) {
    assert.ok(text.includes(`--${option.flag}`), option.flag);
    assert.ok(text.includes(`\`${option.key}\``), option.key);
    if (option.env) assert.ok(text.includes(option.env), option.env);
  }
});
