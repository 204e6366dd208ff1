// The small files kept beside the NARs (listings, logs, realisations, build traces) are stored
// together with a database record, so that --cache-max-size counts them and LRU can evict them.

import type { Database } from '../db/database';
import type { AuxKind, Storage } from '../storage/storage';

/** Stores a small file, then records it. */
export async function keepAuxFile(db: Database, storage: Storage, kind: AuxKind, name: string, data: Buffer): Promise<void> {
  await storage.putAuxFile(kind, name, data);
  await db.putAuxFile({ kind, name, size: data.length });
}

/** Removes a small file's record, then the file. */
export async function dropAuxFile(db: Database, storage: Storage, kind: AuxKind, name: string): Promise<void> {
  await db.deleteAuxFile({ kind, name });
  await storage.deleteAuxFile(kind, name);
}
