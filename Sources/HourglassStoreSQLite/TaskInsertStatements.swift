import Foundation
import GRDB
import GRDBSQLite
import HourglassCore
import HourglassStore

/// The task insert of a group-committed batch, bound through SQLite's C API (``RawStatement``)
/// rather than GRDB's `StatementArguments`.
///
/// The insert runs once per acknowledged `Schedule`, on SQLite's single writer, which is the
/// submit path's queue. Made inside the writer's transaction for one batch.
struct TaskInsertStatements {
  private let insertTask: RawStatement

  static let insertTaskSQL = """
    INSERT OR IGNORE INTO tasks (id, owner, name, operator, blob_digest, arguments, time_zone,
      schedule_spec, recurring, priority, max_attempts, timeout_us, state, partition,
      next_run_us, due_us, due_bucket, version, created_us, idempotency_key)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15, ?16, 1, ?17, ?18)
    """

  /// The task of an owner's idempotency key (served by `tasks_idempotency_key`).
  static let taskOfKeySQL = "SELECT id FROM tasks WHERE owner = ? AND idempotency_key = ?"

  init(_ db: Database) throws {
    insertTask = try RawStatement(cached: db, Self.insertTaskSQL)
  }

  /// Inserts the task; false when nothing was written: its id exists (inserts are idempotent by
  /// id) or its owner used its idempotency key before (`tasks_idempotency_key` is unique).
  func insert(_ row: PreparedInsert) throws -> Bool {
    let s = insertTask
    s.bind(row.id, at: 1)
    s.bind(row.owner, at: 2)
    s.bind(row.name, at: 3)
    s.bind(row.operatorName, at: 4)
    if let blob = row.blob { s.bind(blob.digest.bytes, at: 5) } else { s.bindNull(at: 5) }
    s.bind(row.arguments, at: 6)
    s.bind(row.timeZone, at: 7)
    s.bind(row.scheduleSpec, at: 8)
    s.bind(Int64(row.recurring ? 1 : 0), at: 9)
    s.bind(Int64(row.priority), at: 10)
    s.bind(Int64(row.maxAttempts), at: 11)
    s.bind(row.timeoutMicros, at: 12)
    s.bind(row.state.rawValue, at: 13)
    s.bind(Int64(row.partition), at: 14)
    s.bind(row.firstRunMicros, at: 15)
    s.bind(row.dueBucket, at: 16)
    s.bind(row.createdAtMicros, at: 17)
    if let key = row.idempotencyKey { s.bind(key, at: 18) } else { s.bindNull(at: 18) }
    return try s.execute() > 0
  }

  /// The id of `owner`'s task that holds `key`, if any.
  static func task(idempotencyKey key: String, owner: String, _ db: Database) throws -> TaskID? {
    try Data.fetchOne(db.cachedStatement(sql: taskOfKeySQL), arguments: [owner, key]).flatMap { TaskID(bytes: $0) }
  }
}
