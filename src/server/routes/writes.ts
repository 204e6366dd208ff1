// Uploads (PUT under /upload), deletes and pins. Each is refused with 405 unless its verb is
// enabled, and needs the write token when one is configured (see auth.ts).

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Readable } from 'node:stream';
import { CacheWrites, RejectedWrite } from '../../cache/writes';
import { HttpError } from '../errors';
import { checkedNarName } from './nar';
import { MAX_AUX_BYTES } from '../../cache/cache';
import { buildTraceKey, logName, realisationId } from './aux-files';
import { listingName, narInfoHashOf } from './narinfo';

export interface WriteRoutesOptions {
  allowPut: boolean;
  allowDelete: boolean;
  /** Whether any token guards writes; without one, pins are open only when uploads are (allowPut). */
  writeTokenConfigured: boolean;
}

const MAX_NARINFO_BYTES = 1 << 20;

function notAllowed(reply: FastifyReply, flag: string): FastifyReply {
  return reply
    .code(405)
    .header('allow', 'GET, HEAD')
    .type('text/plain; charset=utf-8')
    .send(`method not allowed: start ncps with ${flag} to enable it\n`);
}

const EMPTY_BODY = 'empty request body: nothing to store';

/** The body stream; fastify passes none for `Content-Length: 0`. Nothing ncps stores is empty. */
function bodyStream(request: FastifyRequest): Readable {
  const body = request.body as Readable | undefined | null;
  if (!body) throw new HttpError(400, EMPTY_BODY);
  return body;
}

async function readBody(request: FastifyRequest, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of bodyStream(request)) {
    total += (chunk as Buffer).length;
    if (total > limit) throw new HttpError(413, `request body larger than ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  if (total === 0) throw new HttpError(400, EMPTY_BODY);
  return Buffer.concat(chunks);
}

async function translate(work: () => Promise<void>): Promise<void> {
  try {
    await work();
  } catch (error) {
    if (error instanceof RejectedWrite) throw new HttpError(error.statusCode, error.message);
    throw error;
  }
}

export function registerWriteRoutes(app: FastifyInstance, writes: CacheWrites, options: WriteRoutesOptions): void {
  // Bodies arrive as raw streams: NARs can be gigabytes, and narinfos are parsed by the cache.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, payload, done) => done(null, payload));

  const write = { access: 'write' as const };

  app.put<{ Params: { file: string } }>('/upload/:file', { config: write }, async (request, reply) => {
    if (!options.allowPut) return notAllowed(reply, '--cache-allow-put-verb');
    const { file } = request.params;
    // nix copy only writes nix-cache-info when GET said 404, which ours never does; accept it.
    if (file === 'nix-cache-info') return reply.code(204).send();
    if (file.endsWith('.ls')) {
      const name = listingName(file);
      const listing = await readBody(request, MAX_AUX_BYTES);
      await translate(() => writes.putAuxFile('ls', name, listing));
      return reply.code(204).send();
    }
    const hash = narInfoHashOf(file);
    if (!hash) return reply.callNotFound();
    const text = (await readBody(request, MAX_NARINFO_BYTES)).toString('utf8');
    await translate(() => writes.putNarInfo(hash, text));
    return reply.code(204).send();
  });

  app.put<{ Params: { name: string } }>('/upload/log/:name', { config: write }, async (request, reply) => {
    if (!options.allowPut) return notAllowed(reply, '--cache-allow-put-verb');
    const name = logName(request.params.name);
    const log = await readBody(request, MAX_AUX_BYTES);
    await translate(() => writes.putAuxFile('log', name, log));
    return reply.code(204).send();
  });

  app.put<{ Params: { file: string } }>('/upload/realisations/:file', { config: write }, async (request, reply) => {
    if (!options.allowPut) return notAllowed(reply, '--cache-allow-put-verb');
    const id = realisationId(request.params.file);
    const text = (await readBody(request, MAX_NARINFO_BYTES)).toString('utf8');
    await translate(() => writes.putRealisation(id, text));
    return reply.code(204).send();
  });

  app.put<{ Params: { drv: string; file: string } }>('/upload/build-trace-v2/:drv/:file', { config: write }, async (request, reply) => {
    if (!options.allowPut) return notAllowed(reply, '--cache-allow-put-verb');
    const key = buildTraceKey(request.params.drv, request.params.file);
    const text = (await readBody(request, MAX_NARINFO_BYTES)).toString('utf8');
    await translate(() => writes.putBuildTrace(key, text));
    return reply.code(204).send();
  });

  app.put<{ Params: { file: string } }>('/upload/nar/:file', { config: write }, async (request, reply) => {
    if (!options.allowPut) return notAllowed(reply, '--cache-allow-put-verb');
    const name = checkedNarName(request.params.file);
    await translate(() => writes.putNar(name, bodyStream(request)));
    return reply.code(204).send();
  });

  for (const prefix of ['', '/upload']) {
    app.delete<{ Params: { file: string } }>(`${prefix}/:file`, { config: write }, async (request, reply) => {
      if (!options.allowDelete) return notAllowed(reply, '--cache-allow-delete-verb');
      const hash = narInfoHashOf(request.params.file);
      if (!hash) return reply.callNotFound();
      return (await writes.deleteNarInfo(hash)) ? reply.code(204).send() : reply.callNotFound();
    });

    app.delete<{ Params: { file: string } }>(`${prefix}/nar/:file`, { config: write }, async (request, reply) => {
      if (!options.allowDelete) return notAllowed(reply, '--cache-allow-delete-verb');
      const name = checkedNarName(request.params.file);
      return (await writes.deleteNar(name)) ? reply.code(204).send() : reply.callNotFound();
    });
  }

  // Pins change what LRU may evict (a pin can hold the store over its size limit), so they are
  // writes: the write token when one is set; without any token, open only when uploads are open
  // to everyone anyway (--cache-allow-put-verb). The Go ncps leaves them open in every case.
  // Answers as the Go ncps's: 200, unpinning what is not pinned included.
  const pinsOpen = options.writeTokenConfigured || options.allowPut;
  const pinsClosed = (reply: FastifyReply) =>
    reply
      .code(403)
      .type('text/plain; charset=utf-8')
      .send('pins are writes: start ncps with --cache-put-token (or --cache-get-token), or with --cache-allow-put-verb to let anyone write\n');

  app.post<{ Params: { file: string } }>('/pin/:file', { config: write }, async (request, reply) => {
    if (!pinsOpen) return pinsClosed(reply);
    const hash = narInfoHashOf(request.params.file);
    if (!hash) return reply.callNotFound();
    return (await writes.pin(hash)) ? reply.code(200).send() : reply.callNotFound();
  });

  app.delete<{ Params: { file: string } }>('/pin/:file', { config: write }, async (request, reply) => {
    if (!pinsOpen) return pinsClosed(reply);
    const hash = narInfoHashOf(request.params.file);
    if (!hash) return reply.callNotFound();
    await writes.unpin(hash);
    return reply.code(200).send();
  });

  // The Go ncps's shape, a JSON array of narinfo hashes; ?detail=true adds store paths and times.
  app.get<{ Querystring: { detail?: string } }>('/pins', async (request, reply) => {
    const pins = await writes.pins();
    const detail = /^(1|true|yes)$/i.test(request.query.detail ?? '');
    return reply.send(detail ? pins : pins.map((pin) => pin.hash));
  });
}
