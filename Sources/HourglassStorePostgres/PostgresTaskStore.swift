import Foundation
import HourglassCore
import HourglassStore
import Logging
import NIOCore
import PostgresNIO

/// The clustered ``TaskStore``: PostgreSQL through postgres-nio's connection pool.
///
/// Inserts go through a ``GroupCommitter`` with a few concurrent drain loops (one per writer
/// connection): each batch is one `INSERT … SELECT FROM unnest(…)` transaction, committed with
/// PostgreSQL's default `synchronous_commit = on`, so an acknowledged task is in the server's
/// synced WAL. Row-level compare-and-set (`WHERE fence = $ AND state = 'leased'`) and `FOR UPDATE`
/// locks make leases and results safe when several coordinators share the database.
public final class PostgresTaskStore: TaskStore {
  /// Connection and batching settings.
  public struct Configuration: Sendable {
    /// Server host (a loopback address in tests).
    public var host: String
    /// Server port.
    public var port: Int
    /// Role to connect as.
    public var username: String
    /// Password, if the server asks for one.
    public var password: String?
    /// Database name.
    public var database: String
    /// Partitions task ids are hashed into; recorded at creation and checked on every open.
    public var partitionCount: Int32
    /// Most task rows in one group-commit transaction.
    public var maxBatchRows: Int
    /// Group-commit transactions in flight at once (each on its own connection).
    public var writerConnections: Int
    /// Size cap of the connection pool.
    public var maxConnections: Int

    /// Defaults for a database on `host:port`.
    public static func defaults(
      host: String, port: Int, username: String, database: String
    )
      -> Configuration
    {
      Configuration(
        host: host, port: port, username: username, password: nil, database: database,
        partitionCount: 64, maxBatchRows: 1000, writerConnections: 4, maxConnections: 12)
    }

    func validate() throws {
      if partitionCount < 1 {
        throw TaskStoreError.invalidArgument("configuration.partitionCount must be at least 1")
      }
      if maxBatchRows < 1 {
        throw TaskStoreError.invalidArgument("configuration.maxBatchRows must be at least 1")
      }
      // One connection at least must be left for leases, renewals and reads while every writer
      // is busy. (A cluster's LISTEN has a connection of its own, outside the pool.)
      if writerConnections < 1 || writerConnections >= maxConnections {
        throw TaskStoreError.invalidArgument(
          "configuration.writerConnections must be between 1 and maxConnections - 1")
      }
    }
  }

  /// The configuration the store was opened with.
  public let configuration: Configuration
  public var partitionCount: Int32 { configuration.partitionCount }

  let client: PostgresClient
  let logger: Logger
  private let runTask: Task<Void, Never>
  private let committer: GroupCommitter<KeyedNewTask>

  /// Connects, applies pending migrations and checks the partition count.
  public init(
    configuration: Configuration, logger: Logger = Logger(label: "hourglass.store.postgres")
  )
    async throws
  {
    try configuration.validate()
    self.configuration = configuration
    self.logger = logger
    var clientConfiguration = PostgresClient.Configuration(
      host: configuration.host, port: configuration.port, username: configuration.username,
      password: configuration.password, database: configuration.database, tls: .disable)
    clientConfiguration.options.maximumConnections = configuration.maxConnections
    clientConfiguration.options.minimumConnections = 0
    let client = PostgresClient(configuration: clientConfiguration, backgroundLogger: logger)
    self.client = client
    self.runTask = Task { await client.run() }
    let partitions = configuration.partitionCount
    self.committer = GroupCommitter(
      maxBatchItems: configuration.maxBatchRows,
      maxConcurrentBatches: configuration.writerConnections, closedError: TaskStoreError.closed
    ) { [client, logger] tasks in
      try await PostgresTaskStore.transaction(client: client, logger: logger) { connection in
        try await PostgresTaskStore.insertBatch(tasks, partitions: partitions, connection: connection, logger: logger)
      }
    }
    do {
      try await migrate()
      let stored = try await scalar(
        "SELECT value FROM store_meta WHERE key = 'partition_count'", as: Int64.self)
      guard stored == Int64(configuration.partitionCount) else {
        throw TaskStoreError.incompatibleStore(
          "store has \(stored.map(String.init) ?? "no") partitions, configured \(configuration.partitionCount)")
      }
    } catch {
      runTask.cancel()
      throw Self.mapError(error)
    }
  }

  /// Lets queued inserts finish, then closes the connections; gives up waiting after
  /// ``closeTimeout``. With the database unreachable, an insert in flight or the pool's own
  /// shutdown can wait for a connection that never comes, and a coordinator stopping must still
  /// exit: the pool is then told to stop and not waited for.
  public func close() async throws {
    let committer = self.committer
    let runTask = self.runTask
    let closed = await finishesFirst(
      {
        await committer.close()
        runTask.cancel()
        await runTask.value
      }, before: { try? await Task.sleep(for: Self.closeTimeout) })
    if !closed {
      runTask.cancel()
      logger.warning("closing the PostgreSQL store gave up waiting for its connections", metadata: ["hourglass.timeout": "\(Self.closeTimeout)"])
    }
  }

  /// How long ``close()`` waits for queued inserts and the connections.
  public static let closeTimeout: Duration = .seconds(10)

  /// How inserts have been gathered into transactions so far.
  public var groupCommitStatistics: GroupCommitStatistics { committer.statistics }

  /// The applied migrations, as `<version>-<name>`.
  public func appliedMigrations() async throws -> [String] {
    var names: [String] = []
    let rows = try await client.query(
      "SELECT version, name FROM hourglass_schema_migrations ORDER BY version", logger: logger)
    for try await (version, name) in rows.decode((Int32, String).self) {
      names.append(String(format: "%04d-%@", version, name))
    }
    return names
  }

  private func migrate() async throws {
    try await Self.transaction(client: client, logger: logger) { [logger, configuration] connection in
      // One coordinator migrates at a time.
      try await connection.query("SELECT pg_advisory_xact_lock(7263415)", logger: logger)
      try await connection.query(
        """
        CREATE TABLE IF NOT EXISTS hourglass_schema_migrations (
          version integer PRIMARY KEY, name text NOT NULL, applied_us bigint NOT NULL)
        """, logger: logger)
      var applied = Set<Int32>()
      for try await version in try await connection.query(
        "SELECT version FROM hourglass_schema_migrations", logger: logger
      ).decode(Int32.self) {
        applied.insert(version)
      }
      let known = PostgresMigrations.all(partitionCount: configuration.partitionCount)
      if let newest = applied.max(), newest > known.map(\.version).max() ?? 0 {
        throw TaskStoreError.incompatibleStore("schema version \(newest) is newer than this program")
      }
      for migration in known where !applied.contains(migration.version) {
        for statement in migration.statements {
          try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
        }
        let now = Int64(Date().timeIntervalSince1970 * 1_000_000)
        try await connection.query(
          "INSERT INTO hourglass_schema_migrations (version, name, applied_us) VALUES (\(migration.version), \(migration.name), \(now))",
          logger: logger)
      }
    }
  }

  // MARK: Plumbing

  static func mapError(_ error: any Error) -> any Error {
    if error is TaskStoreError || error is CancellationError { return error }
    if let psql = error as? PSQLError {
      if let info = psql.serverInfo {
        return TaskStoreError.io(
          "\(info[.sqlState] ?? "?"): \(info[.message] ?? String(describing: psql.code))")
      }
      return TaskStoreError.io("\(psql.code)")
    }
    return TaskStoreError.io(String(describing: error))
  }

  /// Runs `body` in one transaction on one pooled connection; rolls back if it throws.
  /// Runs `body` in a transaction. One that PostgreSQL aborted as a deadlock victim (40P01) or
  /// a serialization failure (40001) changed nothing and is run again, up to three times in all:
  /// lease recovery locks a run before its task while other writes lock the task first, and
  /// such an abort is the server's way out, not an error for the caller.
  static func transaction<T: Sendable>(
    client: PostgresClient, logger: Logger, _ body: (PostgresConnection) async throws -> T
  ) async throws -> T {
    var attempt = 1
    while true {
      do {
        return try await client.withConnection { connection in
          try await connection.query("BEGIN", logger: logger)
          do {
            let value = try await body(connection)
            try await connection.query("COMMIT", logger: logger)
            return value
          } catch {
            _ = try? await connection.query("ROLLBACK", logger: logger)
            throw error
          }
        }
      } catch {
        if attempt < 3, isRetryable(error) {
          attempt += 1
          logger.debug("transaction aborted by the server; running it again", metadata: ["hourglass.error": "\(String(reflecting: error))"])
          continue
        }
        throw mapError(error)
      }
    }
  }

  /// Whether `error` is PostgreSQL aborting a transaction that may simply be run again.
  static func isRetryable(_ error: any Error) -> Bool {
    guard let psql = error as? PSQLError, let state = psql.serverInfo?[.sqlState] else { return false }
    return state == "40P01" || state == "40001"
  }

  func transaction<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
    try await Self.transaction(client: client, logger: logger, body)
  }

  func scalar<T: PostgresDecodable & Sendable>(_ query: PostgresQuery, as: T.Type) async throws -> T? {
    do {
      for try await value in try await client.query(query, logger: logger).decode(T.self) {
        return value
      }
      return nil
    } catch {
      throw Self.mapError(error)
    }
  }

  static func buffer(_ bytes: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: bytes) }

  // MARK: Insert

  @discardableResult
  public func insert(_ tasks: [NewTask]) async throws -> [TaskID] {
    try await withCheckedThrowingContinuation { continuation in insert(tasks) { continuation.resume(with: $0) } }
  }

  /// `TaskStore.insert(_:completion:)`: the tasks go to the group committer directly, and
  /// `completion` runs on the task that committed their batch.
  public func insert(_ tasks: [NewTask], completion: @escaping @Sendable (Result<[TaskID], any Error>) -> Void) {
    if let refusal = tasks.insertRefusal {
      completion(.failure(refusal))
      return
    }
    let items = tasks.map { KeyedNewTask(task: $0, outcome: $0.idempotencyKey == nil ? nil : KeyedInsertOutcome()) }
    committer.submit(items) { result in
      // For each task, the id of the task that stands for it (see `TaskStore.insert`).
      completion(result.map { items.map { $0.outcome?.existing ?? $0.task.id } })
    }
  }

  /// Stands for NULL in `bigint[]` parameters, which postgres-nio cannot bind with NULL elements.
  static let nullMicros = Int64.min

  /// How many times a batch inserts the tasks that were neither written nor stood for by an
  /// existing task (the row they met was being purged), before its transaction gives up.
  static let insertRounds = 3

  static func insertBatch(
    _ items: [KeyedNewTask], partitions: Int32, connection: PostgresConnection, logger: Logger
  ) async throws {
    // A transaction tried again (after a deadlock) starts from nothing noted.
    for item in items { item.outcome?.clear() }
    let blobs = Set(items.compactMap(\.task.blob?.digest))
    if !blobs.isEmpty {
      // Shared locks that a blob's removal waits for (removeUnreferencedBlobs), taken before
      // this transaction's tasks name their blobs, so that the removal sees them once it
      // commits.
      try await connection.query(
        "SELECT pg_advisory_xact_lock_shared(k) FROM unnest(\(blobLockKeys(blobs))::bigint[]) AS k", logger: logger)
    }
    var inserted = Set<UUID>()
    var pending = items
    for round in 0..<insertRounds where !pending.isEmpty {
      if round > 0 {
        logger.debug("inserting again the tasks that met rows purged meanwhile", metadata: ["hourglass.count": "\(pending.count)"])
      }
      let written = try await insertTasks(pending, partitions: partitions, connection: connection, logger: logger)
      inserted.formUnion(written)
      pending = try await unresolved(pending.filter { !written.contains($0.task.id.uuid) }, connection: connection, logger: logger)
    }
    guard pending.isEmpty else {
      throw TaskStoreError.io("\(pending.count) task(s) met rows that were being removed while they were inserted; try again")
    }
    // The blobs of the tasks inserted, in digest order (as every batch takes them, so that two
    // batches storing the same new blobs do not deadlock): a task refused for its key stores
    // none.
    var storing: [BlobDigest: TaskBlob] = [:]
    for item in items where inserted.contains(item.task.id.uuid) {
      if let blob = item.task.blob { storing[blob.digest] = blob }
    }
    let ordered = storing.values.sorted { $0.digest.bytes.lexicographicallyPrecedes($1.digest.bytes) }
    if !ordered.isEmpty {
      try await connection.query(
        """
        INSERT INTO blobs (digest, content, size)
        SELECT * FROM unnest(\(ordered.map { buffer($0.digest.bytes) })::bytea[],
          \(ordered.map { buffer($0.content) })::bytea[], \(ordered.map { Int32($0.content.count) })::integer[])
        ON CONFLICT (digest) DO NOTHING
        """, logger: logger)
    }
  }

  /// Inserts `items`' tasks in their order, so that the first of two tasks with one key wins;
  /// returns the ids written. A task whose id exists (a retried insert) or whose owner used its
  /// key before (the unique `tasks_idempotency_key`) is not written.
  private static func insertTasks(
    _ items: [KeyedNewTask], partitions: Int32, connection: PostgresConnection, logger: Logger
  ) async throws -> Set<UUID> {
    var ids: [UUID] = [], owners: [String] = [], names: [String] = [], operators: [String] = []
    var blobDigests: [ByteBuffer] = [], arguments: [String] = [], zones: [String] = []
    var specs: [ByteBuffer] = [], recurring: [Bool] = [], priorities: [Int32] = []
    var attempts: [Int32] = [], timeouts: [Int64] = [], states: [String] = []
    var partitionValues: [Int32] = [], firstRuns: [Int64] = [], buckets: [Int64] = []
    var created: [Int64] = [], keys: [String] = [], keyed: [Bool] = []
    for task in items.map(\.task) {
      ids.append(task.id.uuid)
      owners.append(task.owner)
      names.append(task.name)
      operators.append(task.operatorName)
      blobDigests.append(buffer(task.blob?.digest.bytes ?? []))
      arguments.append(String(decoding: encodeArguments(task.arguments), as: UTF8.self))
      zones.append(task.timeZone)
      specs.append(buffer(task.scheduleSpec))
      recurring.append(task.recurring)
      priorities.append(task.priority)
      attempts.append(task.maxAttempts)
      timeouts.append(task.timeoutMicros)
      states.append((task.firstRunMicros == nil ? TaskState.paused : .active).rawValue)
      partitionValues.append(Partition(taskID: task.id, count: partitions).rawValue)
      firstRuns.append(task.firstRunMicros ?? nullMicros)
      buckets.append(task.firstRunMicros.map { HourBucket(containing: $0).rawValue } ?? nullMicros)
      created.append(task.createdAtMicros)
      keys.append(task.idempotencyKey ?? "")
      keyed.append(task.idempotencyKey != nil)
    }
    var written = Set<UUID>()
    for try await row in try await connection.query(
      """
      INSERT INTO tasks (id, owner, name, operator, blob_digest, arguments, time_zone,
        schedule_spec, recurring, priority, max_attempts, timeout_us, state, partition,
        next_run_us, due_us, due_bucket, version, created_us, idempotency_key)
      SELECT id, owner, name, op, NULLIF(digest, '\\x'::bytea), args, zone, spec, rec, prio,
        attempts, timeout, st, part, NULLIF(first_run, \(nullMicros)),
        NULLIF(first_run, \(nullMicros)), NULLIF(bucket, \(nullMicros)), 1, created,
        CASE WHEN has_key THEN key END
      FROM unnest(\(ids)::uuid[], \(owners)::text[], \(names)::text[], \(operators)::text[],
        \(blobDigests)::bytea[], \(arguments)::text[], \(zones)::text[], \(specs)::bytea[],
        \(recurring)::boolean[], \(priorities)::integer[], \(attempts)::integer[],
        \(timeouts)::bigint[], \(states)::text[], \(partitionValues)::integer[],
        \(firstRuns)::bigint[], \(buckets)::bigint[], \(created)::bigint[], \(keys)::text[],
        \(keyed)::boolean[])
        WITH ORDINALITY AS t(id, owner, name, op, digest, args, zone, spec, rec, prio, attempts,
          timeout, st, part, first_run, bucket, created, key, has_key, ordinal)
      ORDER BY ordinal
      ON CONFLICT DO NOTHING
      RETURNING id
      """, logger: logger)
    {
      written.insert(try row.decode(UUID.self))
    }
    return written
  }

  /// Of `refused`, tasks not written, those that nothing stands for: the row each met (its id,
  /// or its owner's key) is gone. This statement sees later commits than the insert did (read
  /// committed), so such a row was purged meanwhile, and the task must be inserted again. A
  /// keyed task whose key's task is there has that task noted for its caller; an unkeyed one
  /// whose id is there is that task.
  static func unresolved(
    _ refused: [KeyedNewTask], connection: PostgresConnection, logger: Logger
  ) async throws -> [KeyedNewTask] {
    if refused.isEmpty { return [] }
    // Each refused task's key holder (through `tasks_idempotency_key`), and the row of its id
    // (through the primary key): two joins, so that each is an index look-up.
    var byKey: [Int: UUID] = [:]
    var byID = Set<Int>()
    for try await (ordinal, id, viaKey) in try await connection.query(
      """
      WITH r AS (
        SELECT * FROM unnest(\(refused.map(\.task.owner))::text[], \(refused.map { $0.task.idempotencyKey ?? "" })::text[],
          \(refused.map { $0.task.idempotencyKey != nil })::boolean[], \(refused.map(\.task.id.uuid))::uuid[])
          WITH ORDINALITY AS r(owner, key, has_key, id, ordinal)
      )
      SELECT r.ordinal, tasks.id, true FROM r
        JOIN tasks ON tasks.owner = r.owner AND tasks.idempotency_key = r.key
        WHERE r.has_key AND tasks.idempotency_key IS NOT NULL
      UNION ALL
      SELECT r.ordinal, tasks.id, false FROM r JOIN tasks ON tasks.id = r.id
      """, logger: logger
    ).decode((Int64, UUID, Bool).self) {
      if viaKey { byKey[Int(ordinal) - 1] = id } else { byID.insert(Int(ordinal) - 1) }
    }
    var pending: [KeyedNewTask] = []
    for (index, item) in refused.enumerated() {
      if let holder = byKey[index] {
        if holder != item.task.id.uuid { item.outcome?.noteExisting(TaskID(uuid: holder)) }
      } else if !byID.contains(index) {
        pending.append(item)
      }
    }
    return pending
  }
}

func encodeArguments(_ arguments: [String]) -> [UInt8] { ArgumentsCoding.encode(arguments) }

func decodeArguments(_ text: String) -> [String] { ArgumentsCoding.decode(Array(text.utf8)) }

/// A task on its way into a batch, with the slot its caller reads after the commit.
struct KeyedNewTask: Sendable {
  var task: NewTask
  let outcome: KeyedInsertOutcome?
}
