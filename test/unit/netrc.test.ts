import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { basicAuthFor, parseNetrc } from '../../src/upstream/netrc';

describe('netrc', () => {
  const netrc = parseNetrc(`
# comment line
machine cache.example.org login alice password s3cret
machine other.example.org
  login bob
  account ignored
  password hunter2
default login anon password guest
`);

  it('finds credentials by host name', () => {
    assert.equal(basicAuthFor(netrc, 'cache.example.org'), `Basic ${Buffer.from('alice:s3cret').toString('base64')}`);
    assert.equal(basicAuthFor(netrc, 'other.example.org'), `Basic ${Buffer.from('bob:hunter2').toString('base64')}`);
  });

  it('falls back to the default entry', () => {
    assert.equal(basicAuthFor(netrc, 'unknown.example.org'), `Basic ${Buffer.from('anon:guest').toString('base64')}`);
  });

  it('gives nothing without a matching entry or default', () => {
    const only = parseNetrc('machine a.example login x password y\n');
    assert.equal(basicAuthFor(only, 'b.example'), undefined);
    assert.equal(basicAuthFor(undefined, 'a.example'), undefined);
  });

  it('keeps the first entry for a repeated machine, as curl does', () => {
    const twice = parseNetrc('machine h login first password 1\nmachine h login second password 2\n');
    assert.equal(basicAuthFor(twice, 'h'), `Basic ${Buffer.from('first:1').toString('base64')}`);
  });
});
