import GRDB
import GRDBSQLite
import HourglassCore
import HourglassStore

/// The task insert and the idempotency-key claim of a group-committed batch, bound through
/// SQLite's C API rather than GRDB's `StatementArguments`.
///
/// These two statements run once per acknowledged `Schedule`, on SQLite's single writer, which is
/// the submit path's queue. Building `StatementArguments` (eighteen values through generic,
/// unspecialised code) and binding them cost about as much as executing the statement; binding
/// each column directly costs a fraction of that. Everything else in the store goes through GRDB.
///
/// Created inside the writer's transaction for one batch and finalised when it goes away. The
/// statements run in that transaction, so GRDB's commit or rollback covers them.
final class TaskInsertStatements {
  private let connection: OpaquePointer
  private let insertTask: OpaquePointer
  private let claimKey: OpaquePointer

  static let insertTaskSQL = """
    INSERT OR IGNORE INTO tasks (id, owner, name, operator, blob_digest, arguments, time_zone,
      schedule_spec, recurring, priority, max_attempts, timeout_us, state, partition,
      next_run_us, due_us, due_bucket, version, created_us)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15, ?16, 1, ?17)
    """

  static let claimKeySQL = "INSERT OR IGNORE INTO idempotency_keys (owner, key, task_id) VALUES (?1, ?2, ?3)"

  init(_ db: Database) throws {
    guard let connection = db.sqliteConnection else { throw TaskStoreError.closed }
    self.connection = connection
    insertTask = try Self.prepare(Self.insertTaskSQL, on: connection)
    do {
      claimKey = try Self.prepare(Self.claimKeySQL, on: connection)
    } catch {
      sqlite3_finalize(insertTask)
      throw error
    }
  }

  deinit {
    sqlite3_finalize(insertTask)
    sqlite3_finalize(claimKey)
  }

  /// Inserts the task (nothing if its id exists: inserts are idempotent by id).
  func insert(_ row: PreparedInsert) throws {
    let s = insertTask
    bind(row.id, at: 1, of: s)
    bind(row.owner, at: 2, of: s)
    bind(row.name, at: 3, of: s)
    bind(row.operatorName, at: 4, of: s)
    if let blob = row.blob { bind(blob.digest.bytes, at: 5, of: s) } else { sqlite3_bind_null(s, 5) }
    bind(row.arguments, at: 6, of: s)
    bind(row.timeZone, at: 7, of: s)
    bind(row.scheduleSpec, at: 8, of: s)
    sqlite3_bind_int64(s, 9, row.recurring ? 1 : 0)
    sqlite3_bind_int64(s, 10, Int64(row.priority))
    sqlite3_bind_int64(s, 11, Int64(row.maxAttempts))
    sqlite3_bind_int64(s, 12, row.timeoutMicros)
    bind(row.state.rawValue, at: 13, of: s)
    sqlite3_bind_int64(s, 14, Int64(row.partition))
    if let first = row.firstRunMicros { sqlite3_bind_int64(s, 15, first) } else { sqlite3_bind_null(s, 15) }
    if let bucket = row.dueBucket { sqlite3_bind_int64(s, 16, bucket) } else { sqlite3_bind_null(s, 16) }
    sqlite3_bind_int64(s, 17, row.createdAtMicros)
    try run(s, sql: Self.insertTaskSQL)
  }

  /// Claims `key` for `taskID`; false when the owner used the key before (nothing written).
  func claim(key: String, owner: String, taskID: [UInt8]) throws -> Bool {
    bind(owner, at: 1, of: claimKey)
    bind(key, at: 2, of: claimKey)
    bind(taskID, at: 3, of: claimKey)
    try run(claimKey, sql: Self.claimKeySQL)
    return sqlite3_changes(connection) > 0
  }

  // MARK: C API

  /// `SQLITE_TRANSIENT`: SQLite copies the value before the bind call returns (the C macro is a
  /// cast that Swift does not import).
  private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

  private func bind(_ text: String, at index: Int32, of statement: OpaquePointer) {
    var text = text
    text.withUTF8 { utf8 in
      // An empty string, not NULL: SQLite binds NULL for a nil pointer.
      guard let base = utf8.baseAddress, !utf8.isEmpty else {
        _ = sqlite3_bind_text(statement, index, "", 0, Self.transient)
        return
      }
      _ = sqlite3_bind_text(
        statement, index, UnsafeRawPointer(base).assumingMemoryBound(to: CChar.self), Int32(utf8.count),
        Self.transient)
    }
  }

  private func bind(_ bytes: [UInt8], at index: Int32, of statement: OpaquePointer) {
    bytes.withUnsafeBytes { raw in
      // A zero-length blob, not NULL, for an empty array (SQLite binds NULL for a nil pointer).
      if raw.isEmpty {
        _ = sqlite3_bind_zeroblob(statement, index, 0)
      } else {
        _ = sqlite3_bind_blob(statement, index, raw.baseAddress, Int32(raw.count), Self.transient)
      }
    }
  }

  /// Steps the statement to completion, then resets it (keeping nothing bound that matters: every
  /// parameter is bound again before the next run).
  private func run(_ statement: OpaquePointer, sql: String) throws {
    let code = sqlite3_step(statement)
    sqlite3_reset(statement)
    guard code == SQLITE_DONE else {
      throw DatabaseError(
        resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(connection)), sql: sql)
    }
  }

  private static func prepare(_ sql: String, on connection: OpaquePointer) throws -> OpaquePointer {
    var statement: OpaquePointer?
    let code = sqlite3_prepare_v2(connection, sql, -1, &statement, nil)
    guard code == SQLITE_OK, let statement else {
      throw DatabaseError(
        resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(connection)), sql: sql)
    }
    return statement
  }
}
