import GRDB
import GRDBSQLite
import HourglassStore

/// A prepared statement driven through SQLite's C API: values bound column by column, stepped,
/// and reset after each execution.
///
/// The store's hottest statements (the task insert, the lease and the result of every run) run
/// on SQLite's single writer, which is the queue of both the submit and the dispatch paths. Through
/// GRDB each execution builds `StatementArguments` (an array of existentials, through generic code
/// that is not specialised) and goes through GRDB's bookkeeping; for these short statements that
/// costs about as much as SQLite's own work. Binding each value directly costs a fraction of it.
///
/// The statement is one of GRDB's cached statements, so it is prepared once per connection and
/// finalised by GRDB; it runs inside a transaction GRDB opened, so its commit or rollback covers
/// it. Every execution resets the statement, and
/// every parameter is bound again before the next one.
struct RawStatement {
  let handle: OpaquePointer
  let connection: OpaquePointer
  private let sql: String

  /// The statement GRDB caches on `db`'s connection for `sql`.
  init(cached db: Database, _ sql: String) throws {
    guard let connection = db.sqliteConnection else { throw TaskStoreError.closed }
    self.connection = connection
    self.handle = try db.cachedStatement(sql: sql).sqliteStatement
    self.sql = sql
  }

  // MARK: Binding

  /// `SQLITE_TRANSIENT`: SQLite copies the value before the bind call returns (the C macro is a
  /// cast that Swift does not import).
  private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

  func bind(_ value: Int64, at index: Int32) {
    sqlite3_bind_int64(handle, index, value)
  }

  func bind(_ value: Int64?, at index: Int32) {
    if let value { sqlite3_bind_int64(handle, index, value) } else { sqlite3_bind_null(handle, index) }
  }

  func bind(_ text: String, at index: Int32) {
    var text = text
    text.withUTF8 { utf8 in
      // An empty string, not NULL: SQLite binds NULL for a nil pointer.
      guard let base = utf8.baseAddress, !utf8.isEmpty else {
        _ = sqlite3_bind_text(handle, index, "", 0, Self.transient)
        return
      }
      _ = sqlite3_bind_text(
        handle, index, UnsafeRawPointer(base).assumingMemoryBound(to: CChar.self), Int32(utf8.count), Self.transient)
    }
  }

  func bind(_ text: String?, at index: Int32) {
    if let text { bind(text, at: index) } else { sqlite3_bind_null(handle, index) }
  }

  /// A blob; a zero-length blob (not NULL) for an empty collection.
  func bind(_ bytes: [UInt8], at index: Int32) {
    bytes.withUnsafeBytes { raw in
      if raw.isEmpty {
        _ = sqlite3_bind_zeroblob(handle, index, 0)
      } else {
        _ = sqlite3_bind_blob(handle, index, raw.baseAddress, Int32(raw.count), Self.transient)
      }
    }
  }

  func bindNull(at index: Int32) {
    sqlite3_bind_null(handle, index)
  }

  // MARK: Running

  /// Runs the statement to completion and returns the rows it changed.
  @discardableResult
  func execute() throws -> Int {
    let code = sqlite3_step(handle)
    sqlite3_reset(handle)
    guard code == SQLITE_DONE else { throw error(code) }
    return Int(sqlite3_changes(connection))
  }

  /// Runs a statement that returns at most one integer (such as `… RETURNING attempt`): the
  /// value, or nil when it returned no row.
  func executeReturningInt64() throws -> Int64? {
    var code = sqlite3_step(handle)
    var value: Int64?
    if code == SQLITE_ROW {
      value = sqlite3_column_int64(handle, 0)
      code = sqlite3_step(handle)
    }
    sqlite3_reset(handle)
    guard code == SQLITE_DONE else { throw error(code) }
    return value
  }

  private func error(_ code: Int32) -> DatabaseError {
    DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(connection)), sql: sql)
  }
}
