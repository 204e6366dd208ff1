// Where our signing key comes from: an explicit file, else the database (so every instance sharing
// it signs with the same key), else the legacy file an older ncps kept in storage, else a new key
// generated once. The first writer wins, so instances starting together agree on one key.

import { readFileSync } from 'node:fs';
import type { Database } from '../db/database';
import { generateSecretKey, parseSecretKey, type SecretKey } from '../nix';
import type { Storage } from '../storage/storage';
import type { Logger } from '../telemetry/logger';

const SETTING = 'secret_key';

/** The key kept in the database, if any (tools that must not generate one use this). */
export async function storedSigningKey(db: Database): Promise<SecretKey | undefined> {
  const text = await db.getSetting(SETTING);
  return text ? parseSecretKey(text) : undefined;
}

/** The key in a --cache-secret-key-path file; throws with the reason and a hint. */
export function readSecretKeyFile(file: string): SecretKey {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`cannot read --cache-secret-key-path ${file}: ${(error as Error).message} (the service user must be able to read it)`);
  }
  try {
    return parseSecretKey(text);
  } catch (error) {
    throw new Error(
      `--cache-secret-key-path ${file} is not a Nix secret key: ${(error as Error).message} ` +
        '(give the secret half, as written by nix-store --generate-binary-cache-key, not the public key)',
    );
  }
}

export async function loadSigningKey(options: {
  /** The key of --cache-secret-key-path, already read (readSecretKeyFile). */
  fileKey?: SecretKey | undefined;
  hostname: string;
  db: Database;
  storage: Storage;
  logger: Logger;
}): Promise<SecretKey> {
  const { fileKey, hostname, db, storage, logger } = options;
  if (fileKey) return fileKey;
  const stored = await db.getSetting(SETTING);
  if (stored) return parseSecretKey(stored);

  const legacy = await storage.getLegacySecretKey();
  let candidate: SecretKey;
  if (legacy) {
    candidate = parseSecretKey(legacy);
    logger.info({ keyName: candidate.name }, 'adopting the signing key from config/cache.key');
  } else {
    candidate = generateSecretKey(hostname);
  }
  const winner = parseSecretKey(await db.putSettingIfAbsent(SETTING, candidate.text));
  if (winner.text === candidate.text && !legacy) {
    logger.info({ publicKey: winner.publicKey.text }, 'generated a new signing key and stored it in the database');
  }
  return winner;
}

/**
 * The key a server with this configuration signs with, without generating one (for fsck, which
 * must check and repair signatures with exactly that key): the key file, else the database's,
 * else the legacy file; undefined when there is none yet.
 */
export async function servingSigningKey(options: { secretKeyPath: string; db: Database; storage: Storage }): Promise<SecretKey | undefined> {
  const { secretKeyPath, db, storage } = options;
  if (secretKeyPath) return readSecretKeyFile(secretKeyPath);
  const stored = await storedSigningKey(db);
  if (stored) return stored;
  const legacy = await storage.getLegacySecretKey();
  return legacy ? parseSecretKey(legacy) : undefined;
}
