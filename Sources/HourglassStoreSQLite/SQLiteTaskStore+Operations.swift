import Foundation
import GRDB
import HourglassCore
import HourglassStore

extension SQLiteTaskStore {
  static let taskColumns = """
    id, owner, name, operator, blob_digest, arguments, time_zone, schedule_spec, recurring,
    priority, max_attempts, timeout_us, state, partition, next_run_us, due_us, last_run_us,
    last_run_state, version, created_us, runs_completed
    """

  /// Leases a run (task id, scheduled time, owner, expiry, fence, start): a new run is attempt 1,
  /// an existing one (a retry or a re-lease after expiry) counts one more attempt. Returns the
  /// attempt. Its start is the lease's time, or its scheduled time when it is leased ahead of
  /// it (the executor starts it no earlier).
  static let leaseRunSQL = """
    INSERT INTO runs (task_id, scheduled_us, attempt, state, lease_owner, lease_expires_us,
      fence, started_us)
    VALUES (?1, ?2, 1, 'leased', ?3, ?4, ?5, max(?6, ?2))
    ON CONFLICT (task_id, scheduled_us) DO UPDATE SET
      attempt = attempt + 1, state = 'leased', lease_owner = excluded.lease_owner,
      lease_expires_us = excluded.lease_expires_us, fence = excluded.fence,
      started_us = excluded.started_us, retry_at_us = NULL, finished_us = NULL
    RETURNING attempt
    """

  static let runColumns = """
    task_id, scheduled_us, attempt, state, lease_owner, lease_expires_us, fence, started_us,
    finished_us, retry_at_us, exit_status, output_tail, error
    """

  static func taskRecord(_ row: Row) throws -> TaskRecord {
    let idData: Data = row[0]
    guard let id = TaskID(bytes: idData) else {
      throw TaskStoreError.io("corrupt task id of \(idData.count) bytes")
    }
    let digest: Data? = row[4]
    let stateText: String = row[12]
    let lastState: String? = row[17]
    let spec: Data = row[7]
    return TaskRecord(
      id: id, owner: row[1], name: row[2], operatorName: row[3],
      blobDigest: digest.flatMap { BlobDigest(bytes: $0) }, arguments: decodeArguments(row[5]),
      timeZone: row[6], scheduleSpec: Array(spec), recurring: row[8], priority: row[9],
      maxAttempts: row[10], timeoutMicros: row[11], state: TaskState(rawValue: stateText) ?? .dead,
      partition: Partition(rawValue: row[13]), nextRunMicros: row[14], dueMicros: row[15],
      lastRunMicros: row[16], lastRunState: lastState.flatMap(RunState.init(rawValue:)),
      version: row[18], createdAtMicros: row[19], runsCompleted: row[20])
  }

  static func runRecord(_ row: Row) throws -> RunRecord {
    let idData: Data = row[0]
    guard let id = TaskID(bytes: idData) else {
      throw TaskStoreError.io("corrupt task id of \(idData.count) bytes")
    }
    let stateText: String = row[3]
    let fence: Int64 = row[6]
    let tail: Data = row[11]
    return RunRecord(
      id: RunID(taskID: id, scheduledMicros: row[1]), attempt: row[2],
      state: RunState(rawValue: stateText) ?? .dead, leaseOwner: row[4], leaseExpiresMicros: row[5],
      fence: Fence(rawValue: UInt64(fence)), startedMicros: row[7], finishedMicros: row[8],
      retryAtMicros: row[9], exitStatus: row[10], outputTail: Array(tail), error: row[12])
  }

  // MARK: Reads

  public func task(id: TaskID, owner: String) async throws -> TaskRecord? {
    try await read { db in
      try Row.fetchOne(
        db,
        sql: "SELECT \(Self.taskColumns) FROM tasks WHERE id = ? AND owner = ? AND state <> 'deleted'",
        arguments: [Data(id.bytes), owner]
      ).map(Self.taskRecord)
    }
  }

  public func taskID(idempotencyKey key: String, owner: String) async throws -> TaskID? {
    try await read { db in try TaskInsertStatements.task(idempotencyKey: key, owner: owner, db) }
  }

  public func dispatchRecord(taskID: TaskID) async throws -> TaskRecord? {
    try await read { db in
      try Row.fetchOne(
        db,
        sql: "SELECT \(Self.taskColumns) FROM tasks WHERE id = ? AND state <> 'deleted'",
        arguments: [Data(taskID.bytes)]
      ).map(Self.taskRecord)
    }
  }

  public func listTasks(owner: String, query: TaskListQuery) async throws -> TaskPage {
    guard query.limit > 0 else { throw TaskStoreError.invalidArgument("limit must be positive") }
    let states = (query.states ?? Set(TaskState.allCases.filter { $0 != .deleted }))
      .map(\.rawValue).sorted()
    if states.isEmpty { return TaskPage(tasks: [], nextCursor: nil) }
    let placeholders = Array(repeating: "?", count: states.count).joined(separator: ", ")
    var sql = "SELECT \(Self.taskColumns) FROM tasks WHERE owner = ? AND state IN (\(placeholders))"
    var arguments: [(any DatabaseValueConvertible)?] = [owner]
    arguments += states.map { $0 as (any DatabaseValueConvertible)? }
    if let after = query.after {
      sql += " AND id > ?"
      arguments.append(Data(after.bytes))
    }
    sql += " ORDER BY id LIMIT ?"
    arguments.append(query.limit + 1)
    let args = StatementArguments(arguments)
    let finalSQL = sql
    let (limit, maxBytes) = (query.limit, query.maxBytes)
    return try await read { db in
      // Row by row, so a page cut by size never decodes (or holds) the rest.
      var page = PageBuilder<TaskRecord>(limit: limit, maxBytes: maxBytes, size: \.listingBytes)
      let rows = try Row.fetchCursor(db, sql: finalSQL, arguments: args)
      while let row = try rows.next(), try page.take(decoding: { try Self.taskRecord(row) }) {}
      return TaskPage(tasks: page.records, nextCursor: page.hasMore ? page.records.last?.id : nil)
    }
  }

  public func firstDueBucket(partition: Partition, atOrAfter bucket: HourBucket) async throws -> HourBucket? {
    try await read { db in
      let statement = try db.cachedStatement(
        sql: """
          SELECT min(due_bucket) FROM tasks INDEXED BY tasks_due_id
          WHERE state = 'active' AND partition = ? AND due_bucket >= ?
          """)
      return try Int64.fetchOne(statement, arguments: [partition.rawValue, bucket.rawValue]).map(HourBucket.init(rawValue:))
    }
  }

  public func loadDue(
    shard: ShardID, from: Int64, until: Int64, after: DueCursor?, limit: Int
  ) async throws
    -> [DueEntry]
  {
    try await read { db in
      let rows: RowCursor
      if let after {
        // A row-value comparison: SQLite turns it into a range on the index's (due_us, id) tail.
        let statement = try db.cachedStatement(
          sql: """
            SELECT id, next_run_us, due_us, priority FROM tasks INDEXED BY tasks_due_id
            WHERE state = 'active' AND partition = ? AND due_bucket = ? AND due_us >= ? AND due_us < ?
              AND (due_us, id) > (?, ?)
            ORDER BY due_us, id LIMIT ?
            """)
        rows = try Row.fetchCursor(
          statement,
          arguments: [
            shard.partition.rawValue, shard.bucket.rawValue, from, until, after.dueMicros,
            Data(after.taskID.bytes), limit,
          ])
      } else {
        let statement = try db.cachedStatement(
          sql: """
            SELECT id, next_run_us, due_us, priority FROM tasks INDEXED BY tasks_due_id
            WHERE state = 'active' AND partition = ? AND due_bucket = ? AND due_us >= ? AND due_us < ?
            ORDER BY due_us, id LIMIT ?
            """)
        rows = try Row.fetchCursor(
          statement,
          arguments: [shard.partition.rawValue, shard.bucket.rawValue, from, until, limit])
      }
      var entries: [DueEntry] = []
      while let row = try rows.next() {
        let idData: Data = row[0]
        guard let id = TaskID(bytes: idData) else { continue }
        entries.append(
          DueEntry(taskID: id, scheduledMicros: row[1], dueMicros: row[2], priority: row[3]))
      }
      return entries
    }
  }

  public func runPage(taskID: TaskID, owner: String, before: Int64?, limit: Int, maxBytes: Int?) async throws -> RunPage {
    guard limit > 0 else { throw TaskStoreError.invalidArgument("limit must be positive") }
    return try await read { db in
      guard
        try Bool.fetchOne(
          db, sql: "SELECT 1 FROM tasks WHERE id = ? AND owner = ? AND state <> 'deleted'",
          arguments: [Data(taskID.bytes), owner]) != nil
      else { throw TaskStoreError.taskNotFound(taskID) }
      var page = PageBuilder<RunRecord>(limit: limit, maxBytes: maxBytes, size: \.listingBytes)
      let rows = try Row.fetchCursor(
        db,
        sql: """
          SELECT \(Self.runColumns) FROM runs WHERE task_id = ? AND scheduled_us < ?
          ORDER BY scheduled_us DESC LIMIT ?
          """, arguments: [Data(taskID.bytes), before ?? Int64.max, limit + 1])
      while let row = try rows.next(), try page.take(decoding: { try Self.runRecord(row) }) {}
      return RunPage(runs: page.records, hasMore: page.hasMore)
    }
  }

  public func blob(_ digest: BlobDigest) async throws -> [UInt8]? {
    try await read { db in
      try Data.fetchOne(
        db, sql: "SELECT content FROM blobs WHERE digest = ?", arguments: [Data(digest.bytes)]
      ).map { Array($0) }
    }
  }

  public func counts() async throws -> StoreCounts {
    try await read { db in
      var tasks: [TaskState: Int] = [:]
      for row in try Row.fetchAll(db, sql: "SELECT state, count(*) FROM tasks GROUP BY state") {
        if let state = TaskState(rawValue: row[0]) { tasks[state] = row[1] }
      }
      var runs: [RunState: Int] = [:]
      for row in try Row.fetchAll(db, sql: "SELECT state, count(*) FROM runs GROUP BY state") {
        if let state = RunState(rawValue: row[0]) { runs[state] = row[1] }
      }
      return StoreCounts(tasks: tasks, runs: runs)
    }
  }

  // MARK: Writes

  public func deleteTask(
    id: TaskID, owner: String, cancelRunning: Bool, now: Int64
  ) async throws
    -> DeleteOutcome
  {
    try await write { db in
      guard
        let row = try Row.fetchOne(
          db,
          sql: "SELECT state, next_run_us FROM tasks WHERE id = ? AND owner = ? AND state <> 'deleted'",
          arguments: [Data(id.bytes), owner])
      else { return .notFound }
      let state = TaskState(rawValue: row[0])
      let nextRun: Int64? = row[1]
      // Every leased run: the task's current one, and with overlap `allow` those detached from it.
      var running = try Int64.fetchAll(
        db, sql: "SELECT scheduled_us FROM runs WHERE task_id = ? AND state = 'leased' ORDER BY scheduled_us",
        arguments: [Data(id.bytes)]
      ).map { RunID(taskID: id, scheduledMicros: $0) }
      if state == .running, let nextRun, !running.contains(where: { $0.scheduledMicros == nextRun }) {
        running.append(RunID(taskID: id, scheduledMicros: nextRun))
      }
      var outcome = DeleteOutcome.deleted
      if let first = running.first {
        if !cancelRunning { return .runInProgress(first) }
        outcome = .deletedCancellingRuns(running)
      }
      try db.execute(
        sql: """
          UPDATE runs SET state = 'cancelled', finished_us = ?
          WHERE task_id = ? AND state IN ('pending', 'leased', 'retrying')
          """, arguments: [now, Data(id.bytes)])
      try db.execute(
        sql: """
          UPDATE tasks SET state = 'deleted', deleted_us = ?, due_us = NULL, due_bucket = NULL,
            version = version + 1
          WHERE id = ?
          """, arguments: [now, Data(id.bytes)])
      return outcome
    }
  }

  public func purgeDeleted(before: Int64, limit: Int) async throws -> PurgeResult {
    try await purge(
      selecting: "SELECT id, blob_digest FROM tasks WHERE state = 'deleted' AND deleted_us < ? ORDER BY deleted_us LIMIT ?",
      before: before, limit: limit)
  }

  public func purgeFinished(before: Int64, limit: Int) async throws -> PurgeResult {
    try await purge(
      selecting: """
        SELECT id, blob_digest FROM tasks INDEXED BY tasks_finished
        WHERE state IN ('completed', 'dead') AND \(Self.finishedAnchor) < ?
          AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.task_id = tasks.id AND runs.state = 'leased')
        ORDER BY \(Self.finishedAnchor) LIMIT ?
        """, before: before, limit: limit)
  }

  /// The instant a finished task's retention counts from, as in the `tasks_finished` index.
  static let finishedAnchor = "coalesce(last_run_us, created_us)"

  /// Removes the tasks that `sql` (bound to `before` and `limit`; it selects each task's id and
  /// blob digest) selects, with their runs (a task's idempotency key is in its row), and then the
  /// blobs they leave without a task, in one write transaction: the single writer serializes it
  /// with every insert, so a blob a new task is being stored with cannot go.
  private func purge(selecting sql: String, before: Int64, limit: Int) async throws -> PurgeResult {
    try await write { db in
      var ids: [Data] = []
      var digests = Set<Data>()
      let rows = try Row.fetchCursor(db, sql: sql, arguments: [before, limit])
      while let row = try rows.next() {
        ids.append(row[0])
        if let digest: Data = row[1] { digests.insert(digest) }
      }
      for id in ids {
        try db.execute(sql: "DELETE FROM runs WHERE task_id = ?", arguments: [id])
        try db.execute(sql: "DELETE FROM tasks WHERE id = ?", arguments: [id])
      }
      return PurgeResult(tasks: ids.count, blobs: try Self.removeUnreferencedBlobs(db, digests))
    }
  }

  /// Removes, of `digests`, the blobs no task refers to (the `tasks_blob` index answers each);
  /// returns how many. Call inside a write transaction.
  static func removeUnreferencedBlobs(_ db: Database, _ digests: some Sequence<Data>) throws -> Int {
    let statement = try db.cachedStatement(
      sql: "DELETE FROM blobs WHERE digest = ?1 AND NOT EXISTS (SELECT 1 FROM tasks WHERE blob_digest = ?1)")
    var removed = 0
    for digest in digests {
      try statement.execute(arguments: [digest])
      removed += db.changesCount
    }
    return removed
  }

  public func sweepBlobs(after: BlobDigest?, limit: Int) async throws -> BlobSweep {
    try await write { db in
      let examined = try Data.fetchAll(
        db, sql: "SELECT digest FROM blobs WHERE digest > ? ORDER BY digest LIMIT ?",
        arguments: [Data(after?.bytes ?? []), limit])
      let removed = try Self.removeUnreferencedBlobs(db, examined)
      let next = examined.count < limit ? nil : examined.last.flatMap { BlobDigest(bytes: $0) }
      return BlobSweep(examined: examined.count, removed: removed, next: next)
    }
  }

  public func createLease(
    taskID: TaskID, owner: String, now: Int64, expiresAt: Int64
  ) async throws
    -> Lease
  {
    guard expiresAt > now else { throw TaskStoreError.invalidArgument("expiresAt must be after now") }
    return try await write { db in
      switch try Self.lease(db, taskID: taskID, expected: nil, owner: owner, now: now, expiresAt: expiresAt, advanceTo: nil) {
      case .leased(let lease): return lease
      case .missing: throw TaskStoreError.taskNotFound(taskID)
      case .notDispatchable: throw TaskStoreError.notDispatchable(taskID)
      }
    }
  }

  public func createLeases(_ requests: [LeaseRequest], now: Int64) async throws -> [Lease?] {
    if requests.isEmpty { return [] }
    for request in requests where request.expiresAt <= now {
      throw TaskStoreError.invalidArgument("expiresAt must be after now")
    }
    return try await write(.lease, count: requests.count) { db in try Self.leases(db, requests, now: now) }
  }

  /// Leases a batch inside the caller's write transaction: per run, one compare-and-set on the
  /// task (active, next run as expected, the run not past pending/retrying) and one upsert of the
  /// run; per batch, one read and one write of the fence counter. Inside the single write
  /// transaction the fences handed out are `counter + 1, counter + 2, …`, so they still only grow.
  /// The per-run statements are bound through the C API (``RawStatement``): they run once per
  /// dispatched run on the single writer.
  static func leases(_ db: Database, _ requests: [LeaseRequest], now: Int64) throws -> [Lease?] {
    let readFence = try RawStatement(cached: db, "SELECT value FROM store_meta WHERE key = 'fence'")
    guard let counter = try readFence.executeReturningInt64() else { throw TaskStoreError.io("fence counter missing") }
    var fence = counter
    let toRunning = try RawStatement(cached: db, leaseToRunningSQL)
    let moveOn = try RawStatement(cached: db, leaseMoveOnSQL)
    let upsert = try RawStatement(cached: db, Self.leaseRunSQL)
    var leases: [Lease?] = []
    leases.reserveCapacity(requests.count)
    for request in requests {
      let id = request.taskID.bytes
      let scheduled = request.scheduledMicros
      let changed: Int
      if let next = request.advanceTo {
        // Overlap allowed: the task moves on at once; this run stays leased on its own.
        moveOn.bind(next, at: 1)
        moveOn.bind(HourBucket(containing: next).rawValue, at: 2)
        moveOn.bind(id, at: 3)
        moveOn.bind(scheduled, at: 4)
        changed = try moveOn.execute()
      } else {
        toRunning.bind(id, at: 1)
        toRunning.bind(scheduled, at: 2)
        changed = try toRunning.execute()
      }
      guard changed > 0 else {
        leases.append(nil)
        continue
      }
      fence += 1
      upsert.bind(id, at: 1)
      upsert.bind(scheduled, at: 2)
      upsert.bind(request.owner, at: 3)
      upsert.bind(request.expiresAt, at: 4)
      upsert.bind(fence, at: 5)
      upsert.bind(now, at: 6)
      let attempt = try upsert.executeReturningInt64()
      leases.append(
        Lease(
          runID: RunID(taskID: request.taskID, scheduledMicros: scheduled), owner: request.owner,
          fence: Fence(rawValue: UInt64(fence)), attempt: attempt.map { Int32(clamping: $0) } ?? 1, grantedAtMicros: now,
          expiresAtMicros: request.expiresAt))
    }
    if fence != counter {
      let writeFence = try RawStatement(cached: db, "UPDATE store_meta SET value = ?1 WHERE key = 'fence'")
      writeFence.bind(fence, at: 1)
      try writeFence.execute()
    }
    return leases
  }

  /// A run may be leased only while it has not gone past pending/retrying.
  private static let runNotPast = """
    NOT EXISTS (SELECT 1 FROM runs WHERE task_id = tasks.id AND scheduled_us = tasks.next_run_us
      AND state NOT IN ('pending', 'retrying'))
    """

  static let leaseToRunningSQL = """
    UPDATE tasks SET state = 'running', version = version + 1
    WHERE id = ?1 AND state = 'active' AND next_run_us = ?2 AND \(runNotPast)
    """

  static let leaseMoveOnSQL = """
    UPDATE tasks SET next_run_us = ?1, due_us = ?1, due_bucket = ?2, version = version + 1
    WHERE id = ?3 AND state = 'active' AND next_run_us = ?4 AND \(runNotPast)
    """

  public func dispatchRecords(taskIDs: [TaskID]) async throws -> [TaskID: TaskRecord] {
    if taskIDs.isEmpty { return [:] }
    return try await read { db in
      var records: [TaskID: TaskRecord] = [:]
      // SQLite allows 32,766 parameters; stay well below.
      for start in stride(from: 0, to: taskIDs.count, by: 500) {
        let chunk = taskIDs[start..<min(taskIDs.count, start + 500)]
        let placeholders = Array(repeating: "?", count: chunk.count).joined(separator: ", ")
        let rows = try Row.fetchAll(
          db,
          sql: "SELECT \(Self.taskColumns) FROM tasks WHERE id IN (\(placeholders)) AND state <> 'deleted'",
          arguments: StatementArguments(chunk.map { Data($0.bytes) }))
        for row in rows {
          let record = try Self.taskRecord(row)
          records[record.id] = record
        }
      }
      return records
    }
  }

  enum LeaseOutcome {
    case leased(Lease)
    case missing
    case notDispatchable
  }

  /// Leases the task's next run inside the caller's write transaction.
  static func lease(
    _ db: Database, taskID: TaskID, expected: Int64?, owner: String, now: Int64, expiresAt: Int64,
    advanceTo: Int64?
  ) throws -> LeaseOutcome {
    let id = Data(taskID.bytes)
    guard
      let task = try Row.fetchOne(
        try db.cachedStatement(sql: "SELECT state, next_run_us FROM tasks WHERE id = ?"), arguments: [id])
    else { return .missing }
    let state: String = task[0]
    guard state == TaskState.active.rawValue, let scheduled = task[1] as Int64? else {
      return .notDispatchable
    }
    if let expected, expected != scheduled { return .notDispatchable }
    if let runState = try String.fetchOne(
      try db.cachedStatement(sql: "SELECT state FROM runs WHERE task_id = ? AND scheduled_us = ?"),
      arguments: [id, scheduled]),
      runState != RunState.pending.rawValue && runState != RunState.retrying.rawValue
    {
      return .notDispatchable
    }
    guard
      let fence = try Int64.fetchOne(
        try db.cachedStatement(sql: "UPDATE store_meta SET value = value + 1 WHERE key = 'fence' RETURNING value"))
    else { throw TaskStoreError.io("fence counter missing") }
    let attempt = try Int32.fetchOne(
      try db.cachedStatement(sql: Self.leaseRunSQL), arguments: [id, scheduled, owner, expiresAt, fence, now])
    if let next = advanceTo {
      // Overlap allowed: the task moves on at once; this run stays leased on its own.
      try db.cachedStatement(
        sql: "UPDATE tasks SET state = 'active', next_run_us = ?, due_us = ?, due_bucket = ?, version = version + 1 WHERE id = ?"
      ).execute(arguments: [next, next, HourBucket(containing: next).rawValue, id])
    } else {
      try db.cachedStatement(sql: "UPDATE tasks SET state = 'running', version = version + 1 WHERE id = ?")
        .execute(arguments: [id])
    }
    return .leased(
      Lease(
        runID: RunID(taskID: taskID, scheduledMicros: scheduled), owner: owner,
        fence: Fence(rawValue: UInt64(fence)), attempt: attempt ?? 1, grantedAtMicros: now,
        expiresAtMicros: expiresAt))
  }

  public func detachRun(_ runID: RunID, nextRunMicros: Int64) async throws -> Bool {
    try await write { db in
      try db.execute(
        sql: """
          UPDATE tasks SET state = 'active', next_run_us = ?, due_us = ?, due_bucket = ?,
            version = version + 1
          WHERE id = ? AND state = 'running' AND next_run_us = ?
          """,
        arguments: [
          nextRunMicros, nextRunMicros, HourBucket(containing: nextRunMicros).rawValue,
          Data(runID.taskID.bytes), runID.scheduledMicros,
        ])
      return db.changesCount > 0
    }
  }

  public func renewLease(runID: RunID, fence: Fence, expiresAt: Int64) async throws {
    try await write { db in
      try db.execute(
        sql: """
          UPDATE runs SET lease_expires_us = ?
          WHERE task_id = ? AND scheduled_us = ? AND fence = ? AND state = 'leased'
          """,
        arguments: [expiresAt, Data(runID.taskID.bytes), runID.scheduledMicros, fence.storedValue])
      if db.changesCount == 0 { throw TaskStoreError.staleFence(runID) }
    }
  }

  public func renewLeases(_ items: [LeaseRenewalRequest]) async throws -> [Bool] {
    if items.isEmpty { return [] }
    return try await write { db in
      let statement = try db.cachedStatement(
        sql: """
          UPDATE runs SET lease_expires_us = ?
          WHERE task_id = ? AND scheduled_us = ? AND fence = ? AND state = 'leased'
          """)
      return try items.map { item in
        try statement.execute(arguments: [
          item.expiresAt, Data(item.runID.taskID.bytes), item.runID.scheduledMicros, item.fence.storedValue,
        ])
        return db.changesCount > 0
      }
    }
  }

  public func recordResult(
    runID: RunID, fence: Fence, result: RunResult
  ) async throws
    -> RecordOutcome
  {
    try await recordResults([ResultRecord(runID: runID, fence: fence, result: result)])[0]
  }

  public func recordResults(_ items: [ResultRecord]) async throws -> [RecordOutcome] {
    if items.isEmpty { return [] }
    // Every result is checked before anything is written.
    let states = try items.map { try $0.result.recordedRunState() }
    return try await write(.result, count: items.count) { db in try zip(items, states).map { try Self.record(db, $0, runState: $1) } }
  }

  /// Records one checked result, whose run takes `runState`, inside the caller's write
  /// transaction: the run's compare-and-set on its fence, then the task's next step, then the
  /// old runs the result forgets. Bound through the C API (``RawStatement``): this runs once per
  /// finished run on the single writer.
  static func record(_ db: Database, _ item: ResultRecord, runState: RunState) throws -> RecordOutcome {
    let result = item.result
    let runID = item.runID
    var retryAt: Int64? = nil
    if case .retry(let at) = result.next { retryAt = at }
    let id = runID.taskID.bytes
    let run = try RawStatement(cached: db, recordRunSQL)
    run.bind(runState.rawValue, at: 1)
    run.bind(result.finishedMicros, at: 2)
    run.bind(result.exitStatus.map(Int64.init), at: 3)
    run.bind(result.outputTail, at: 4)
    run.bind(result.error, at: 5)
    run.bind(retryAt, at: 6)
    run.bind(id, at: 7)
    run.bind(runID.scheduledMicros, at: 8)
    run.bind(item.fence.storedValue, at: 9)
    run.bind(result.startedMicros, at: 10)
    if try run.execute() == 0 { return .staleFence }
    let completed: Int64 = runState.countsAsCompleted ? 1 : 0
    switch result.next {
    case .retry(let at):
      let task = try RawStatement(cached: db, recordRetrySQL)
      task.bind(at, at: 1)
      task.bind(HourBucket(containing: at).rawValue, at: 2)
      task.bind(id, at: 3)
      try task.execute()
    case .reschedule(let next):
      let task = try RawStatement(cached: db, recordRescheduleSQL)
      task.bind(next, at: 1)
      task.bind(HourBucket(containing: next).rawValue, at: 2)
      task.bind(runID.scheduledMicros, at: 3)
      task.bind(runState.rawValue, at: 4)
      task.bind(completed, at: 5)
      task.bind(id, at: 6)
      try task.execute()
    case .finish(let state):
      let task = try RawStatement(cached: db, recordFinishSQL)
      task.bind(state.rawValue, at: 1)
      task.bind(runID.scheduledMicros, at: 2)
      task.bind(runState.rawValue, at: 3)
      task.bind(completed, at: 4)
      task.bind(id, at: 5)
      try task.execute()
    case .runOnly:
      // A detached run: it counts, but the last-run fields keep the latest run.
      let task = try RawStatement(cached: db, recordRunOnlySQL)
      task.bind(completed, at: 1)
      task.bind(runID.scheduledMicros, at: 2)
      task.bind(runState.rawValue, at: 3)
      task.bind(id, at: 4)
      try task.execute()
    }
    if let before = result.forgetRunsBeforeMicros {
      let forget = try RawStatement(cached: db, forgetRunsSQL)
      forget.bind(id, at: 1)
      forget.bind(before, at: 2)
      try forget.execute()
    }
    return .recorded
  }

  /// A recurring task's finished runs before an instant (its primary key's range).
  static let forgetRunsSQL = """
    DELETE FROM runs WHERE task_id = ?1 AND scheduled_us < ?2 AND state IN \(RunState.terminalSQLList)
    """

  static let recordRunSQL = """
    UPDATE runs SET state = ?1, finished_us = ?2, exit_status = ?3, output_tail = ?4, error = ?5,
      retry_at_us = ?6, started_us = COALESCE(?10, started_us)
    WHERE task_id = ?7 AND scheduled_us = ?8 AND fence = ?9 AND state = 'leased'
    """

  static let recordRetrySQL = """
    UPDATE tasks SET state = 'active', due_us = ?1, due_bucket = ?2, version = version + 1
    WHERE id = ?3 AND state = 'running'
    """

  static let recordRescheduleSQL = """
    UPDATE tasks SET state = 'active', next_run_us = ?1, due_us = ?1, due_bucket = ?2,
      last_run_us = ?3, last_run_state = ?4, runs_completed = runs_completed + ?5,
      version = version + 1
    WHERE id = ?6 AND state = 'running'
    """

  static let recordFinishSQL = """
    UPDATE tasks SET state = ?1, next_run_us = NULL, due_us = NULL, due_bucket = NULL,
      last_run_us = ?2, last_run_state = ?3, runs_completed = runs_completed + ?4,
      version = version + 1
    WHERE id = ?5 AND state = 'running'
    """

  static let recordRunOnlySQL = """
    UPDATE tasks SET runs_completed = runs_completed + ?1, version = version + 1,
      last_run_state = CASE WHEN last_run_us IS NULL OR last_run_us <= ?2
        THEN ?3 ELSE last_run_state END,
      last_run_us = CASE WHEN last_run_us IS NULL OR last_run_us <= ?2
        THEN ?2 ELSE last_run_us END
    WHERE id = ?4
    """

  public func recoverExpiredLeases(
    now: Int64, skewBound: Int64, limit: Int
  ) async throws
    -> [RunRecord]
  {
    try await write(.recover) { db in
      let rows = try Row.fetchAll(
        db,
        sql: """
          SELECT \(Self.runColumns) FROM runs INDEXED BY runs_leased
          WHERE state = 'leased' AND lease_expires_us < ? ORDER BY lease_expires_us LIMIT ?
          """, arguments: [now - skewBound, limit])
      var recovered: [RunRecord] = []
      for row in rows {
        var run = try Self.runRecord(row)
        let id = Data(run.id.taskID.bytes)
        try db.execute(
          sql: """
            UPDATE tasks SET state = 'active', due_us = ?, due_bucket = ?, version = version + 1
            WHERE id = ? AND state = 'running' AND next_run_us = ? AND max_attempts > ?
            """, arguments: [now, HourBucket(containing: now).rawValue, id, run.id.scheduledMicros, run.attempt])
        if db.changesCount == 0,
          try Bool.fetchOne(
            db, sql: "SELECT 1 FROM tasks WHERE id = ? AND state = 'running' AND next_run_us = ?", arguments: [id, run.id.scheduledMicros]) != nil
        {
          // Its last allowed attempt: left leased, for the caller to record it dead.
          recovered.append(run)
          continue
        }
        if db.changesCount == 0 {
          // A run detached from its task (overlap allowed): its task has moved on, so the run
          // is not sent again; it ends as dead.
          try db.execute(
            sql: """
              UPDATE runs SET state = 'dead', finished_us = ?, error = 'the lease expired; a run of an overlap-allowed task is not sent again'
              WHERE task_id = ? AND scheduled_us = ? AND state = 'leased'
              """, arguments: [now, id, run.id.scheduledMicros])
          try db.execute(
            sql: "UPDATE tasks SET runs_completed = runs_completed + 1, version = version + 1 WHERE id = ?",
            arguments: [id])
          continue
        }
        try db.execute(
          sql: "UPDATE runs SET state = 'pending' WHERE task_id = ? AND scheduled_us = ? AND state = 'leased'",
          arguments: [id, run.id.scheduledMicros])
        run.state = .pending
        recovered.append(run)
      }
      return recovered
    }
  }

  public func advance(
    taskID: TaskID, expectedVersion: Int64, nextRunMicros: Int64?, state: TaskState
  ) async throws -> Int64? {
    guard [.active, .paused, .completed].contains(state) else {
      throw TaskStoreError.invalidArgument("advance to \(state) is not allowed")
    }
    if state == .active && nextRunMicros == nil {
      throw TaskStoreError.invalidArgument("an active task needs a next run time")
    }
    return try await write { db in
      let id = Data(taskID.bytes)
      guard
        let row = try Row.fetchOne(
          db,
          sql: """
            SELECT next_run_us FROM tasks
            WHERE id = ? AND version = ? AND state IN ('active', 'paused', 'completed')
            """, arguments: [id, expectedVersion])
      else { return nil }
      if let oldRun = row[0] as Int64?, oldRun != nextRunMicros {
        try db.execute(
          sql: """
            UPDATE runs SET state = 'skipped'
            WHERE task_id = ? AND scheduled_us = ? AND state IN ('pending', 'retrying')
            """, arguments: [id, oldRun])
      }
      return try Int64.fetchOne(
        db,
        sql: """
          UPDATE tasks SET state = ?, next_run_us = ?, due_us = ?, due_bucket = ?,
            version = version + 1
          WHERE id = ? AND version = ?
          RETURNING version
          """,
        arguments: [
          state.rawValue, nextRunMicros, nextRunMicros,
          nextRunMicros.map { HourBucket(containing: $0).rawValue }, id, expectedVersion,
        ])
    }
  }
}
