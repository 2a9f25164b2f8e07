import Foundation
import GRDB
import HourglassCore
import HourglassStore
import Logging
import Synchronization

/// The embedded ``TaskStore``: one SQLite file in WAL mode, through GRDB over the system libsqlite3.
///
/// Inserts go through a ``GroupCommitter`` with one drain loop: concurrent `insert` calls are
/// written in one transaction of up to ``Configuration/maxBatchRows`` rows, and all of them return
/// after that transaction has committed (and, with `synchronous=FULL`, been synced). Other writes
/// are one transaction each; SQLite serialises all writes on GRDB's single writer connection.
public final class SQLiteTaskStore: TaskStore {
  /// How hard a commit waits for the disk.
  public enum Synchronous: String, Sendable, Hashable, CaseIterable {
    /// Every commit is synced before it is acknowledged (the default; no acknowledged task is lost
    /// on power loss).
    case full = "FULL"
    /// Opt-in: WAL commits are synced only at checkpoints. Survives a process crash, but a power
    /// loss or kernel crash may lose the last acknowledged commits.
    case normal = "NORMAL"
    /// Opt-in, for throwaway stores only: never syncs; a power loss can lose or corrupt data.
    case off = "OFF"

    var pragmaValue: Int {
      switch self {
      case .off: return 0
      case .normal: return 1
      case .full: return 2
      }
    }
  }

  /// Settings of the SQLite store, validated by ``SQLiteTaskStore/init(configuration:logger:)``.
  public struct Configuration: Sendable, Hashable {
    /// Path of the database file (created if missing, with its `-wal` and `-shm` files beside it).
    public var path: String
    /// Durability of commits; anything but `.full` is documented as losing the last commits on
    /// power loss.
    public var synchronous: Synchronous
    /// Partitions task ids are hashed into, recorded when the file is created. Nil (the default)
    /// means one for a new file and whatever an existing file recorded; a number must match what
    /// the file recorded.
    ///
    /// Partitions are the unit coordinators share a store's work in, and a SQLite store has one
    /// coordinator, so one is enough. It is also cheaper to write: the due index leads with the
    /// partition, and with one partition the entries a batch of inserts adds (due at nearby times)
    /// share a few index pages instead of dirtying one page per partition in every commit.
    public var partitionCount: Int32?
    /// Most task rows in one group-commit transaction.
    public var maxBatchRows: Int
    /// Page cache of the writer connection, in KiB: every lease, result and insert runs on it.
    /// It should hold the store's working set; with a million stored tasks that is the whole
    /// file (~600 MB), and with 256 MB instead, dispatch lateness at 5,000 runs/s rose from ~1.5
    /// to ~2.5 ms at the median (docs/benchmarks.md). SQLite allocates it as pages are used.
    public var cacheSizeKiB: Int
    /// Page cache of each reader connection, in KiB. Smaller: a reader discards its cache at the
    /// start of every read transaction that follows a commit, which under dispatch is nearly all.
    public var readerCacheSizeKiB: Int
    /// WAL pages appended between checkpoints. Checkpoints run passively on a connection of
    /// their own, never inside a commit (see `SQLiteCheckpointer`).
    public var walAutocheckpointPages: Int
    /// Checkpoints run on a connection of their own (`SQLiteCheckpointer`) instead of inside the
    /// commit that crosses `walAutocheckpointPages` on the writer (SQLite's automatic checkpoint).
    public var backgroundCheckpoints: Bool
    /// Milliseconds to wait for a lock held by another process before failing.
    public var busyTimeoutMilliseconds: Int
    /// Open without write access (every write fails with ``TaskStoreError/io(_:)``).
    public var readOnly: Bool
    /// Cap on the database size in pages (`PRAGMA max_page_count`); nil leaves SQLite's default.
    /// Reaching it fails writes exactly as a full disk does, which is how the fault tests use it.
    public var maxPageCount: Int?

    /// The defaults for a store at `path`.
    public static func defaults(path: String) -> Configuration {
      Configuration(
        path: path, synchronous: .full, partitionCount: nil, maxBatchRows: 1000,
        cacheSizeKiB: 1_048_576, readerCacheSizeKiB: 262_144, walAutocheckpointPages: 16_384, backgroundCheckpoints: true,
        busyTimeoutMilliseconds: 5000, readOnly: false, maxPageCount: nil)
    }

    func validate() throws {
      if path.isEmpty { throw TaskStoreError.invalidArgument("configuration.path is empty") }
      if let partitionCount, partitionCount < 1 {
        throw TaskStoreError.invalidArgument("configuration.partitionCount must be at least 1")
      }
      if maxBatchRows < 1 {
        throw TaskStoreError.invalidArgument("configuration.maxBatchRows must be at least 1")
      }
      if cacheSizeKiB < 0 {
        throw TaskStoreError.invalidArgument("configuration.cacheSizeKiB must not be negative")
      }
      if readerCacheSizeKiB < 0 {
        throw TaskStoreError.invalidArgument("configuration.readerCacheSizeKiB must not be negative")
      }
    }
  }

  /// The configuration the store was opened with.
  public let configuration: Configuration
  /// The partition count the file recorded at its creation.
  public let partitionCount: Int32

  let pool: DatabasePool
  let logger: Logger
  private let committer: GroupCommitter<PreparedInsert>
  /// Nil for a read-only store.
  let checkpointer: SQLiteCheckpointer?
  /// The checkpointer's WAL hook is on the writer connection until ``close()`` takes it off.
  private let hooked = Mutex(true)
  /// Where write transactions and checkpoint passes are noted, when asked for.
  let timeline: SQLiteTimeline?

  /// Opens (creating and migrating if needed) the store described by `configuration`; write
  /// transactions and checkpoint passes are noted in `timeline` if one is given (diagnostics).
  public init(
    configuration: Configuration, logger: Logger = Logger(label: "hourglass.store.sqlite"),
    timeline: SQLiteTimeline? = nil
  )
    async throws
  {
    try configuration.validate()
    self.configuration = configuration
    self.logger = logger
    self.timeline = timeline

    var config = GRDB.Configuration()
    config.readonly = configuration.readOnly
    config.busyMode = .timeout(Double(configuration.busyTimeoutMilliseconds) / 1000)
    config.label = "hourglass.store"
    let writerCache = configuration.cacheSizeKiB
    let readerCache = configuration.readerCacheSizeKiB
    config.prepareDatabase { db in
      // The pool opens its readers read-only; the writer is the one connection that is not.
      let size = db.configuration.readonly ? readerCache : writerCache
      try db.execute(sql: "PRAGMA cache_size = -\(size)")
    }
    let pool: DatabasePool
    do {
      pool = try DatabasePool(path: configuration.path, configuration: config)
    } catch {
      throw Self.mapError(error)
    }
    self.pool = pool

    do {
      if !configuration.readOnly {
        // GRDB sets synchronous=NORMAL on WAL writers after prepareDatabase: set ours afterwards,
        // on the writer connection (the only one that commits), and check it took.
        let wanted = configuration.synchronous
        let maxPages = configuration.maxPageCount
        try await pool.writeWithoutTransaction { db in
          try db.execute(sql: "PRAGMA synchronous = \(wanted.rawValue)")
          if let maxPages { _ = try Int.fetchOne(db, sql: "PRAGMA max_page_count = \(maxPages)") }
          let actual = try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1
          guard actual == wanted.pragmaValue else {
            throw TaskStoreError.incompatibleStore(
              "PRAGMA synchronous is \(actual), expected \(wanted.pragmaValue)")
          }
        }
        try SQLiteMigrations.migrator(partitionCount: configuration.partitionCount ?? 1).migrate(pool)
      }
      let configured = configuration.partitionCount
      partitionCount = try await pool.read { db in
        let stored = try Int32.fetchOne(
          db, sql: "SELECT value FROM store_meta WHERE key = 'partition_count'")
        guard let stored, stored >= 1, configured == nil || stored == configured else {
          throw TaskStoreError.incompatibleStore(
            "store has \(stored.map(String.init) ?? "no") partitions, configured \(configured.map(String.init) ?? "any")"
          )
        }
        return stored
      }
      if configuration.readOnly {
        checkpointer = nil
      } else if !configuration.backgroundCheckpoints {
        let pages = configuration.walAutocheckpointPages
        try await pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA wal_autocheckpoint = \(pages)") }
        checkpointer = nil
      } else {
        // No checkpoint inside a commit from here on: the writer's WAL hook hands them to a
        // connection of their own.
        let checkpointer = try SQLiteCheckpointer(
          path: configuration.path, synchronous: configuration.synchronous,
          threshold: configuration.walAutocheckpointPages, logger: logger, timeline: timeline
        ) { [pool] in
          try await pool.writeWithoutTransaction { db in try db.checkpoint(.passive) }
        }
        try await pool.writeWithoutTransaction { db in checkpointer.install(on: db) }
        self.checkpointer = checkpointer
      }
    } catch {
      throw Self.mapError(error)
    }

    self.committer = GroupCommitter(
      maxBatchItems: configuration.maxBatchRows, maxConcurrentBatches: 1,
      closedError: TaskStoreError.closed
    ) { [pool] rows in
      do {
        try await SQLiteTaskStore.timed(.insert, count: rows.count, timeline, pool) { db in try SQLiteTaskStore.insertBatch(rows, db: db) }
      } catch {
        throw SQLiteTaskStore.mapError(error)
      }
    }
  }

  /// The `synchronous` setting of the writer connection as SQLite reports it (0 OFF, 1 NORMAL,
  /// 2 FULL, 3 EXTRA).
  public func synchronousSetting() async throws -> Int {
    try await pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
  }

  /// The result of `PRAGMA integrity_check` (`["ok"]` for a sound file).
  public func integrityCheck() async throws -> [String] {
    try await pool.read { db in try String.fetchAll(db, sql: "PRAGMA integrity_check") }
  }

  /// How inserts have been gathered into transactions so far.
  public var groupCommitStatistics: GroupCommitStatistics { committer.statistics }

  /// The applied migrations, in order.
  public func appliedMigrations() async throws -> [String] {
    try await pool.read { db in try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY identifier") }
  }

  public func close() async throws {
    await committer.close()
    do {
      // Only the first close takes the hook off.
      let wasHooked = hooked.withLock { hooked -> Bool in
        defer { hooked = false }
        return hooked
      }
      if let checkpointer, wasHooked {
        try await pool.writeWithoutTransaction { db in checkpointer.uninstall(from: db) }
        try await checkpointer.close()
      }
      // Off the cooperative threads: closing waits (blocking its thread) for every reader in
      // use to be given back, and with two cores a blocked cooperative thread is half of them.
      let pool = self.pool
      try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
        DispatchQueue.global().async {
          continuation.resume(with: Result { try pool.close() })
        }
      }
    } catch {
      throw Self.mapError(error)
    }
  }

  deinit {
    // Not closed: at least end the checkpoint loop, so its connection goes with the store.
    checkpointer?.stop()
  }

  /// `PRAGMA wal_autocheckpoint` of the writer connection: 0 while the store's checkpointer
  /// owns checkpoints (no commit runs one).
  public func writerAutocheckpointPages() async throws -> Int {
    try await pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA wal_autocheckpoint") ?? -1 }
  }

  // MARK: Errors

  static func mapError(_ error: any Error) -> any Error {
    if error is TaskStoreError { return error }
    if let db = error as? DatabaseError {
      return TaskStoreError.io("\(db.resultCode): \(db.message ?? "")")
    }
    return TaskStoreError.io(String(describing: error))
  }

  func write<T: Sendable>(
    _ kind: SQLiteTimeline.Kind = .write, count: Int = 1, _ body: @escaping @Sendable (Database) throws -> T
  ) async throws -> T {
    do { return try await Self.timed(kind, count: count, timeline, pool, body) } catch { throw Self.mapError(error) }
  }

  /// One write transaction on `pool`, noted in `timeline` when there is one.
  static func timed<T: Sendable>(
    _ kind: SQLiteTimeline.Kind, count: Int, _ timeline: SQLiteTimeline?, _ pool: DatabasePool,
    _ body: @escaping @Sendable (Database) throws -> T
  ) async throws -> T {
    guard let timeline else { return try await pool.write(body) }
    let queued = WallClock.nowMicros()
    // The transaction is opened here rather than by `pool.write`, so the instant after the
    // commit (and its sync) is read on the writer, before the caller is resumed.
    let (value, started, executed, committed, walFrames) = try await pool.writeWithoutTransaction { db in
      let started = WallClock.nowMicros()
      var executed: Int64 = 0
      var value: T?
      try db.inTransaction {
        value = try body(db)
        executed = WallClock.nowMicros()
        return .commit
      }
      return (value!, started, executed, WallClock.nowMicros(), timeline.walFrames)
    }
    timeline.append(
      .init(
        kind: kind, queued: queued, started: started, executed: executed, committed: committed, resumed: WallClock.nowMicros(),
        count: count, walFrames: walFrames))
    return value
  }

  func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
    do { return try await pool.read(body) } catch { throw Self.mapError(error) }
  }

  // MARK: Insert

  @discardableResult
  public func insert(_ tasks: [NewTask]) async throws -> [TaskID] {
    try await withCheckedThrowingContinuation { continuation in insert(tasks) { continuation.resume(with: $0) } }
  }

  /// `TaskStore.insert(_:completion:)`: the rows go to the group committer directly, and
  /// `completion` runs on the task that committed their batch.
  public func insert(_ tasks: [NewTask], completion: @escaping @Sendable (Result<[TaskID], any Error>) -> Void) {
    if let refusal = tasks.insertRefusal {
      completion(.failure(refusal))
      return
    }
    // Rows are turned into statement arguments here, on the callers' threads and in parallel,
    // so the single writer only executes statements.
    let partitions = partitionCount
    let rows = tasks.map { PreparedInsert($0, partitions: partitions) }
    committer.submit(rows) { result in
      // For each task, the id of the task that stands for it (see `TaskStore.insert`).
      completion(result.map { zip(tasks, rows).map { task, row in row.outcome?.existing ?? task.id } })
    }
  }

  static func insertBatch(_ rows: [PreparedInsert], db: Database) throws {
    let blobStatement = try db.cachedStatement(
      sql: "INSERT OR IGNORE INTO blobs (digest, content, size) VALUES (?, ?, ?)")
    let statements = try TaskInsertStatements(db)
    var seenBlobs = Set<BlobDigest>()
    for row in rows {
      guard try statements.insert(row) else {
        // Nothing written: the id exists (a retried insert; that row stands and holds its blob),
        // or the owner used the key before, and that earlier task stands for this one.
        if let key = row.idempotencyKey, let existing = try TaskInsertStatements.task(idempotencyKey: key, owner: row.owner, db) {
          row.outcome?.noteExisting(existing)
        }
        continue
      }
      // After the task, in the same transaction: a task refused for its key stores no blob.
      if let blob = row.blob, seenBlobs.insert(blob.digest).inserted {
        try blobStatement.execute(arguments: [Data(blob.digest.bytes), Data(blob.content), blob.content.count])
      }
    }
  }
}

/// One task turned into column values, ready for the writer.
struct PreparedInsert: Sendable {
  let id: [UInt8]
  let owner: String
  let name: String
  let operatorName: String
  let arguments: [UInt8]
  let timeZone: String
  let scheduleSpec: [UInt8]
  let recurring: Bool
  let priority: Int32
  let maxAttempts: Int32
  let timeoutMicros: Int64
  let state: TaskState
  let partition: Int32
  let firstRunMicros: Int64?
  let dueBucket: Int64?
  let createdAtMicros: Int64
  let blob: TaskBlob?
  let idempotencyKey: String?
  /// Set for keyed tasks: where the writer notes the earlier task when the key was already used.
  let outcome: KeyedInsertOutcome?

  init(_ task: NewTask, partitions: Int32) {
    id = task.id.bytes
    owner = task.owner
    name = task.name
    operatorName = task.operatorName
    arguments = encodeArguments(task.arguments)
    timeZone = task.timeZone
    scheduleSpec = task.scheduleSpec
    recurring = task.recurring
    priority = task.priority
    maxAttempts = task.maxAttempts
    timeoutMicros = task.timeoutMicros
    state = task.firstRunMicros == nil ? .paused : .active
    partition = Partition(taskID: task.id, count: partitions).rawValue
    firstRunMicros = task.firstRunMicros
    dueBucket = task.firstRunMicros.map { HourBucket(containing: $0).rawValue }
    createdAtMicros = task.createdAtMicros
    blob = task.blob
    idempotencyKey = task.idempotencyKey
    outcome = task.idempotencyKey == nil ? nil : KeyedInsertOutcome()
  }
}

func encodeArguments(_ arguments: [String]) -> [UInt8] { ArgumentsCoding.encode(arguments) }

func decodeArguments(_ bytes: Data) -> [String] { ArgumentsCoding.decode(bytes) }
