/** The remote side as seen from a command: one client, its errors, its wire types and its state file. */
export { RemoteDatabaseClient, resolveNodeId, candidateBases, isRetryable, KNOWN_BASES } from './client.js';
export type { RemoteClientOptions, CallOptions, ChangesOptions, BulkLoadOptions, DiscoveryResult } from './client.js';
export { RequestRejectedError } from './errors.js';
export { PROTOCOL_VERSION, CURSOR_PATTERN, compareCursors, checkChangePage, checkFeedChange, checkWireValue } from './protocol.js';
export type {
  ServerInfo,
  TableInfo,
  ColumnInfo,
  ChangePage,
  FeedChange,
  UploadBatch,
  UploadChange,
  UploadResponse,
  UploadResult,
  BulkLoadResponse,
  BulkStatus,
  SnapshotEvent,
  Endpoints,
  DiscoveryDocument,
  TokenResponse,
} from './protocol.js';
export { stateFilePath, readState, writeState, updateState } from './state.js';
export type { StateFile, EndpointState, TokenState } from './state.js';
export { DEFAULT_RETRY } from './retry.js';
export type { RetryPolicy } from './retry.js';
