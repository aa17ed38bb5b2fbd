/** Re-exports the local SQLite adapter: safe opening, checks, schema introspection, online backup and restore. */
export { SQLITE_HEADER, SIDECAR_SUFFIXES, fileSize, inspectDatabaseFile, type DatabaseFileInfo, type FileRole } from './file.js';
export { openDatabase, journalMode, toLocalDatabaseError, isCorruptionError, sqliteCode, type SqliteDatabase, type OpenDatabaseOptions, type SqliteFailureContext } from './open.js';
export { quickCheck, integrityCheck, foreignKeyCheck, type IntegrityResult, type IntegrityCheckName, type ForeignKeyCheckResult, type ForeignKeyViolation } from './checks.js';
export { listTables, introspectSchema, describeTable, countRows, readSequences, hasAutoincrement, type TableInfo, type ColumnInfo, type ForeignKeyInfo, type IndexInfo } from './schema.js';
export {
  takeBackup,
  listBackups,
  pruneBackups,
  ensureBackupDir,
  verifyCopy,
  backupFileName,
  backupPrefix,
  formatStamp,
  parseStamp,
  type BackupFile,
  type BackupResult,
  type TakeBackupOptions,
  type CopyCheck,
} from './backup.js';
export { findBackup, checkRestoreTarget, restoreDatabase, sha256File, type FindBackupOptions, type RestoreOptions, type RestoreResult, type ReplacedFile } from './restore.js';
export { quoteIdent, isInternalTable } from './sql.js';
