import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { HttpError, errorBody } from '../http-error.js';

// Connection-level failures (refused, reset, admin shutdown, cannot connect now) mean the
// database is away, not that the request was wrong.
const UNAVAILABLE = /^(ECONNREFUSED|ECONNRESET|ENOTFOUND|ETIMEDOUT|EPIPE|57P01|57P02|57P03|08\w{3})$/;

/** Returns the wire error for anything thrown while answering a request; unknown errors become INTERNAL. */
export function toHttpError(error: unknown, request?: FastifyRequest): HttpError {
  if (error instanceof HttpError) return error;
  const e = error as Partial<FastifyError> & { code?: string };
  if (Array.isArray(e.validation)) {
    const where = e.validationContext ?? 'body';
    // Ajv messages name the rule, never the value; keep it that way (a value could be a password).
    const problems = e.validation.map((v) => ({ path: `${where}${v.instancePath ?? ''}`, message: v.message ?? 'is not valid' }));
    return new HttpError('BAD_REQUEST', `The request ${where} does not match the schema: ${problems.map((p) => `${p.path} ${p.message}`).join('; ')}`, { problems });
  }
  switch (e.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new HttpError('INVALID_JSON', 'The body is not valid JSON.');
    case 'FST_ERR_CTP_BODY_TOO_LARGE': {
      const limit = request?.routeOptions.bodyLimit;
      return new HttpError('BODY_TOO_LARGE', 'The body is over the size limit.', limit === undefined ? undefined : { limit });
    }
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_TYPE':
      return new HttpError('UNSUPPORTED_MEDIA_TYPE', 'The Content-Type is not one this route takes (send application/json).');
    default:
      break;
  }
  if (typeof e.code === 'string' && UNAVAILABLE.test(e.code)) {
    return new HttpError('DATABASE_UNAVAILABLE', 'PostgreSQL cannot be reached; try again shortly.', undefined, 5);
  }
  if (typeof e.statusCode === 'number' && e.statusCode === 404) return new HttpError('NOT_FOUND', 'No such route.');
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) return new HttpError('BAD_REQUEST', 'The request is not valid.');
  return new HttpError('INTERNAL', 'Internal server error; the request id finds it in the server log.');
}

/** Renders any error as the wire error body with its status, `Retry-After` and `X-Request-Id` (a Fastify error handler). */
export function renderHttpError(error: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const http = toHttpError(error, request);
  if (http.statusCode >= 500) request.log.error({ err: error, code: http.code }, 'request failed');
  else request.log.info({ code: http.code, statusCode: http.statusCode }, http.message);
  if (http.retryAfter !== undefined) void reply.header('retry-after', String(http.retryAfter));
  void reply.header('x-request-id', String(request.id));
  return reply
    .code(http.statusCode)
    .type('application/json; charset=utf-8')
    .send(errorBody(http.code, http.message, String(request.id), http.details));
}
