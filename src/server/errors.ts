// Errors that routes raise on purpose carry their HTTP status. Everything else is a bug and becomes
// a logged 500; "not found" never takes that path.

export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
  }
}

export const badRequest = (message: string) => new HttpError(400, message);
