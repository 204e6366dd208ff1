// The summary table of `ncps fsck`: one row per kind of problem with count and bytes, content
// rows marked as not checked without --verify-content, the repaired column after --repair, and
// the last line (which the exit status follows: problems left or not).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PROBLEM_KINDS, PROBLEM_ORDER, type Finding, type FsckReport, type ProblemKind, type RepairResult } from '../../src/cache/fsck/fsck';
import { formatSummary, problemsLeft } from '../../src/cli/fsck-summary';

function finding(kind: ProblemKind, subject: string, bytes: number): Finding {
  return { kind, subject, bytes, locks: [], recheck: async () => true, repair: async () => ({}) };
}

function report(findings: Finding[], verifyContent: boolean): FsckReport {
  return {
    findings,
    counts: {
      narInfos: 6,
      narRecords: 6,
      narFilesInStorage: 7,
      smallFileRecords: 1,
      listingsInStorage: 0,
      narsVerified: verifyContent ? 3 : 0,
      narsRecentlyVerified: verifyContent ? 2 : 0,
      unrecordedYoung: 1,
      unrecordedOlderThanDatabase: 0,
    },
    notes: [],
    signingKeyName: 'cache-1',
    verifyContent,
    verifiedSinceMs: verifyContent ? 24 * 3600_000 : 0,
  };
}

const row = (text: string, label: string) => text.split('\n').find((l) => l.trimStart().startsWith(label));

describe('fsck summary', () => {
  const findings = [finding('nar-missing', 'a.nar.xz', 2048), finding('nar-missing', 'b.nar.xz', 1024), finding('narinfo-signature', 'h', 0)];

  it('counts and sizes per kind, a total, and says nothing was changed', () => {
    const text = formatSummary(report(findings, false), undefined, 'report');
    assert.match(row(text, PROBLEM_KINDS['nar-missing'].label)!, /\s2\s+3\.0 KiB$/);
    assert.match(row(text, PROBLEM_KINDS['narinfo-signature'].label)!, /\s1\s+-$/, 'no bytes for a signature');
    assert.match(row(text, PROBLEM_KINDS['nar-size'].label)!, /\s0\s+-$/);
    assert.match(row(text, PROBLEM_KINDS['nar-content'].label)!, /\s-\s+-$/, 'content rows: not checked');
    assert.match(row(text, 'total')!, /^\s*total\s+3\s+3\.0 KiB$/);
    assert.match(text, /^3 problems found; nothing changed \(run with --repair to fix\)$/m);
    assert.match(text, /NAR contents: not verified/);
    assert.match(text, /note: 1 file without a record not judged yet/);
    for (const kind of PROBLEM_ORDER) assert.ok(row(text, PROBLEM_KINDS[kind].label), `a row for ${kind}`);
  });

  it('with --verify-content: the content rows count, and the skipped NARs are named', () => {
    const text = formatSummary(report([finding('nar-content', 'c.nar.xz', 100)], true), undefined, 'dry-run');
    assert.match(row(text, PROBLEM_KINDS['nar-content'].label)!, /\s1\s+100 B$/);
    assert.match(text, /NAR contents: 3 verified, 2 skipped \(verified within 24h00m\)/);
    assert.match(text, /1 problem found; dry run, nothing changed/);
  });

  it('after --repair: a repaired column and what is left', () => {
    const repairs: RepairResult[] = [
      { finding: findings[0]!, status: 'repaired' },
      { finding: findings[1]!, status: 'busy' },
      { finding: findings[2]!, status: 'resolved' },
    ];
    const r = report(findings, false);
    const text = formatSummary(r, repairs, 'repaired');
    assert.match(row(text, PROBLEM_KINDS['nar-missing'].label)!, /\s2\s+3\.0 KiB\s+1$/);
    assert.match(row(text, 'total')!, /\s3\s+3\.0 KiB\s+1$/);
    assert.match(text, /^3 problems found, 1 repaired, 1 no longer a problem, 1 left \(see the log\)$/m);
    assert.equal(problemsLeft(r, repairs), 1);
    assert.equal(problemsLeft(r, repairs.map((x) => ({ ...x, status: 'repaired' as const }))), 0);
    assert.equal(problemsLeft(r, undefined), 3);
  });

  it('before the question on a terminal: just what was found', () => {
    const text = formatSummary(report(findings, false), undefined, 'ask');
    assert.match(text, /\n3 problems found\n$/);
  });

  it('a consistent cache', () => {
    const text = formatSummary(report([], false), undefined, 'report');
    assert.match(text, /^consistent: no problems found$/m);
    assert.match(row(text, 'total')!, /\s0\s+-$/);
  });
});
