import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { effectiveMaxConnections, openFilesLimit } from '../../src/server/connection-guard';

describe('connection limit', () => {
  it('is the configured value, or what the open-files limit allows at two descriptors each', () => {
    assert.equal(effectiveMaxConnections(100, 1024), 100);
    assert.equal(effectiveMaxConnections(0, 1024), 480);
    assert.equal(effectiveMaxConnections(0, 100), 18);
    assert.equal(effectiveMaxConnections(0, 10), 16);
    assert.equal(effectiveMaxConnections(0, undefined), undefined);
  });

  it("reads this process's open-files limit", () => {
    const limit = openFilesLimit();
    assert.ok(limit === undefined || limit > 0);
  });
});
