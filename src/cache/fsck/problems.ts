// The kinds of problem `ncps fsck` finds, what each means and what --repair does about it, and
// the shape of a finding: checks produce findings, the repair step fixes them one by one.

export type ProblemKind =
  | 'narinfo-without-nar'
  | 'narinfo-signature'
  | 'nar-missing'
  | 'nar-size'
  | 'nar-content'
  | 'nar-unverifiable'
  | 'nar-unmarked'
  | 'nar-record-unused'
  | 'nar-unrecorded'
  | 'small-file-missing'
  | 'small-file-size'
  | 'small-file-unreadable'
  | 'small-file-unrecorded'
  | 'listing-orphaned';

export interface ProblemKindInfo {
  /** One line in the summary table. */
  label: string;
  /** What --repair does about it. */
  repair: string;
  /** Found only with --verify-content. */
  contentCheck?: boolean;
}

/** In the order of the summary table. */
export const PROBLEM_KINDS: Readonly<Record<ProblemKind, ProblemKindInfo>> = {
  'narinfo-without-nar': { label: 'narinfo without a NAR record', repair: 'narinfo removed (fetched again on demand)' },
  'narinfo-signature': { label: 'narinfo not signed by the serving key', repair: 'signed again' },
  'nar-missing': { label: 'NAR missing from storage', repair: 'records removed (fetched again on demand)' },
  'nar-size': { label: 'NAR file of the wrong size', repair: 'file quarantined, records removed' },
  'nar-content': { label: 'NAR bytes not matching FileHash/NarHash', repair: 'file quarantined, records removed', contentCheck: true },
  'nar-unverifiable': { label: 'NAR that could not be verified', repair: 'none (see the log)', contentCheck: true },
  'nar-unmarked': { label: 'NAR file in storage not counted as stored', repair: 'counted' },
  'nar-record-unused': { label: 'NAR record no narinfo uses', repair: 'record and file removed' },
  'nar-unrecorded': { label: 'NAR file in storage without a record', repair: 'file removed' },
  'small-file-missing': { label: 'small file missing from storage', repair: 'record removed' },
  'small-file-size': { label: 'small file of another size than recorded', repair: 'size recorded' },
  'small-file-unreadable': { label: 'small file that does not parse', repair: 'file and record removed', contentCheck: true },
  'small-file-unrecorded': { label: 'listing in storage without a record', repair: 'recorded' },
  'listing-orphaned': { label: 'listing of a path that is not there', repair: 'file removed' },
};

export const PROBLEM_ORDER = Object.keys(PROBLEM_KINDS) as ProblemKind[];

export interface Finding {
  kind: ProblemKind;
  /** What it is about: a NAR file name, a store path hash, `<kind>/<name>` for small files. */
  subject: string;
  /** Bytes involved (the file's size, or the recorded size when the file is gone). */
  bytes: number;
  /** Why, when the kind alone does not say (which hash did not match, say). */
  detail?: string;
  /** Locks held while it is looked at again and repaired (the ones the server takes for the same things). */
  locks: string[];
  /** Looks again: the cache may be live, so what was seen a moment ago may have changed. */
  recheck(): Promise<boolean>;
  /** Fixes it; returns the fields for the repair's log line. Absent: nothing --repair can do. */
  repair?(): Promise<Record<string, unknown>>;
}
