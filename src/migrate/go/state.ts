// What our database remembers about a Go ncps takeover: whether the last one finished, what the
// Go database held then, and whether the narinfo files in storage are the Go ncps's to keep.

import type { Database } from '../../db/database';

/** Our setting recording the last takeover. */
export const TAKEOVER_SETTING = 'go_takeover';

export interface TakeoverState {
  state: 'running' | 'done';
  source: string;
  generation: string;
  startedAt: number;
  finishedAt?: number;
  /** What the Go database held when it was read (GoSource.fingerprint). */
  fingerprint?: string;
  /** Narinfo files in storage were the Go ncps's and are kept for it (so nothing migrates or deletes them). */
  keptLegacyFiles?: boolean;
}

export async function readTakeoverState(db: Database): Promise<TakeoverState | undefined> {
  const text = await db.getSetting(TAKEOVER_SETTING);
  return text ? (JSON.parse(text) as TakeoverState) : undefined;
}

export async function writeTakeoverState(db: Database, state: TakeoverState): Promise<void> {
  await db.putSetting(TAKEOVER_SETTING, JSON.stringify(state));
}

/** True when the narinfo files in storage belong to the Go ncps a takeover kept them for. */
export async function legacyFilesKeptForGo(db: Database): Promise<boolean> {
  return (await readTakeoverState(db).catch(() => undefined))?.keptLegacyFiles === true;
}
