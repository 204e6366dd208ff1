// fsck of the narinfos: each must point at a NAR record, and carry a signature by the key the
// cache serves with (clients trusting that key reject it otherwise; a key rotated under the same
// name leaves a signature that no longer verifies).

import { narInfoFingerprint, signNarInfo, verifySignature, type NarInfo, type SecretKey } from '../../nix';
import { dropAuxFile } from '../aux-files';
import { narInfoLockKey } from '../cache';
import { PAGE, type FsckContext } from './context';

export interface NarInfoCheckOptions {
  /** The serving key; undefined when narinfos are served unsigned (nothing to check). */
  signingKey: SecretKey | undefined;
}

/** Whether the narinfo carries a valid signature by `key` (false when it cannot carry any). */
function signedBy(narInfo: NarInfo, key: SecretKey): boolean {
  let fingerprint: string;
  try {
    fingerprint = narInfoFingerprint(narInfo);
  } catch {
    return false;
  }
  return narInfo.sigs.some((sig) => verifySignature(sig, fingerprint, [key.publicKey]));
}

function describeSignatures(narInfo: NarInfo, key: SecretKey): string {
  const names = narInfo.sigs.map((sig) => sig.slice(0, sig.indexOf(':')));
  if (names.includes(key.name)) return `its ${key.name} signature does not verify with the serving key`;
  return names.length === 0 ? 'no signatures' : `signed by ${names.join(', ')} only`;
}

export async function checkNarInfos(ctx: FsckContext, options: NarInfoCheckOptions): Promise<void> {
  const { db, storage } = ctx;
  const key = options.signingKey;
  const progress = ctx.progress.phase('checking narinfos', (await db.recordCounts()).narInfos);
  try {
    for (let after = 0; ; ) {
      const page = await db.narInfoPage(after, PAGE);
      if (page.length === 0) break;
      after = page.at(-1)!.id;
      for (const entry of page) {
        progress.tick();
        ctx.counts.narInfos++;
        const { hash, narInfo } = entry;
        if (entry.narFileName === undefined) {
          ctx.found({
            kind: 'narinfo-without-nar',
            subject: hash,
            bytes: 0,
            detail: narInfo.storePath,
            locks: [narInfoLockKey(hash)],
            recheck: async () => (await db.narInfoPage(entry.id - 1, 1)).some((e) => e.id === entry.id && e.narFileName === undefined),
            repair: async () => {
              const { orphanedNarFiles } = await db.deleteNarInfo(hash);
              for (const file of orphanedNarFiles) await storage.deleteNar(file.name);
              await dropAuxFile(db, storage, 'ls', `${hash}.ls`);
              return { storePath: narInfo.storePath };
            },
          });
          continue;
        }
        if (key && !signedBy(narInfo, key)) {
          ctx.found({
            kind: 'narinfo-signature',
            subject: hash,
            bytes: 0,
            detail: `${narInfo.storePath}: ${describeSignatures(narInfo, key)}`,
            locks: [narInfoLockKey(hash)],
            recheck: async () => {
              const now = await db.getNarInfo(hash);
              return now !== undefined && !signedBy(now, key);
            },
            repair: async () => {
              // Our signature replaces any other under the same key name; other keys' signatures stay.
              const current = await db.getNarInfo(hash);
              if (!current) return { gone: true };
              const signed = signNarInfo(current, key);
              await db.setNarInfoSignatures(hash, signed.sigs);
              return { storePath: current.storePath, keyName: key.name };
            },
          });
        }
      }
    }
  } finally {
    progress.end();
  }
}
