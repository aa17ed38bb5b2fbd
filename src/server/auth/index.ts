export { installAuthSchema } from './schema.js';
export { registerAuth, DEFAULT_RATE_LIMITS, DEFAULT_TOKEN_TTL_SECONDS, type AuthOptions, type SyncAccount, type TokenAnswer } from './register.js';
export {
  createAccount,
  removeAccount,
  listAccounts,
  revokeTokensOf,
  checkUsername,
  detectSource,
  parseSyncRule,
  type AccountChange,
  type AccountSource,
  type AccountSummary,
  type SyncRule,
} from './accounts.js';
export { renderHttpError, toHttpError } from './render-error.js';
