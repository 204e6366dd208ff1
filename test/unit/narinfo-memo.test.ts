import assert from 'node:assert/strict';
import { it } from 'node:test';
import { MEMO_TTL_MS, NarInfoMemo } from '../../src/cache/narinfo-memo';
import { NegativeCache } from '../../src/cache/negative-cache';

it('the narinfo memo forgets entries after its TTL and on delete', () => {
  const memo = new NarInfoMemo();
  memo.set('a', Buffer.from('text-a'), 1000);
  assert.equal(memo.get('a', 1000 + MEMO_TTL_MS - 1)?.toString(), 'text-a');
  assert.equal(memo.get('a', 1000 + MEMO_TTL_MS), undefined, 'expired');
  memo.set('b', Buffer.from('text-b'), 5000);
  memo.delete('b');
  assert.equal(memo.get('b', 5000), undefined);
});

it('the negative cache remembers absence only for its TTL, and not at all with TTL 0', async () => {
  const short = new NegativeCache(30);
  short.add('x');
  assert.equal(short.has('x'), true);
  await new Promise((resolve) => setTimeout(resolve, 40));
  assert.equal(short.has('x'), false);
  const off = new NegativeCache(0);
  off.add('y');
  assert.equal(off.has('y'), false);
});
