import HourglassCore
import HourglassStore
import Logging
import PostgresNIO
import Synchronization

extension PostgresTaskStore: PartitionLeasing {
  /// The `LISTEN`/`NOTIFY` channel the coordinators of one database talk on.
  static let noticeChannel = "hourglass_cluster"

  public func heartbeatCoordinator(_ member: CoordinatorMember, now: Int64, expiresAt: Int64) async throws -> [CoordinatorMember] {
    try await transaction { [logger] connection in
      try await connection.query(
        """
        INSERT INTO coordinators (id, expires_us, address, dispatching, incarnation)
        VALUES (\(member.id), \(expiresAt), \(member.address), \(member.dispatching), \(member.incarnation))
        ON CONFLICT (id) DO UPDATE SET
          expires_us = excluded.expires_us, address = excluded.address, dispatching = excluded.dispatching,
          incarnation = excluded.incarnation
        WHERE coordinators.incarnation <= excluded.incarnation OR coordinators.expires_us <= \(now)
        """, logger: logger)
      // Rows of coordinators gone for a day are of no use to anyone.
      try await connection.query("DELETE FROM coordinators WHERE expires_us < \(now - 86_400_000_000)", logger: logger)
      var alive: [CoordinatorMember] = []
      for try await (id, address, dispatching, incarnation) in try await connection.query(
        "SELECT id, address, dispatching, incarnation FROM coordinators WHERE expires_us > \(now) ORDER BY id", logger: logger
      ).decode((String, String?, Bool, Int64).self) {
        alive.append(CoordinatorMember(id: id, address: address, dispatching: dispatching, incarnation: incarnation))
      }
      return alive
    }
  }

  public func newIncarnation() async throws -> Int64 {
    let next = try await scalar("SELECT nextval('coordinator_incarnations')", as: Int64.self)
    guard let next else { throw TaskStoreError.io("the incarnation sequence returned nothing") }
    return next
  }

  public func leaveCluster(_ id: String, incarnation: Int64) async throws {
    try await transaction { [logger] connection in
      try await connection.query("DELETE FROM coordinators WHERE id = \(id) AND incarnation = \(incarnation)", logger: logger)
      try await connection.query(Self.release(owner: id, incarnation: incarnation, partitions: nil), logger: logger)
    }
  }

  public func partitionLeases() async throws -> [PartitionLease] {
    try await rows("SELECT partition, owner, epoch, expires_us FROM partition_leases ORDER BY partition").map(Self.partitionLease)
  }

  public func acquirePartitions(
    _ partitions: [Partition], owner: String, incarnation: Int64, now: Int64, expiresAt: Int64
  ) async throws
    -> [PartitionLease]
  {
    if partitions.isEmpty { return [] }
    let numbers = partitions.map(\.rawValue)
    // Partitions are taken in order, so two coordinators claiming overlapping sets wait for
    // each other rather than deadlock; the conflict clause is the compare-and-set. A process of
    // the same coordinator started later takes the lease at once with a new epoch, which fences
    // the former process if it still runs; that one cannot take it back while it is live.
    return try await transaction { [logger] connection in
      try await connection.query(
        """
        INSERT INTO partition_leases AS l (partition, owner, epoch, expires_us, incarnation)
        SELECT p, \(owner), 1, \(expiresAt), \(incarnation) FROM unnest(\(numbers)::integer[]) AS p ORDER BY p
        ON CONFLICT (partition) DO UPDATE SET
          owner = excluded.owner, expires_us = excluded.expires_us, incarnation = excluded.incarnation,
          epoch = CASE WHEN l.owner = excluded.owner AND l.incarnation = excluded.incarnation THEN l.epoch ELSE l.epoch + 1 END
        WHERE (l.owner = excluded.owner AND l.incarnation <= excluded.incarnation) OR l.expires_us <= \(now)
        """, logger: logger)
      return try await connection.query(
        """
        SELECT partition, owner, epoch, expires_us FROM partition_leases
        WHERE partition = ANY(\(numbers)::integer[]) AND owner = \(owner) AND incarnation = \(incarnation)
          AND expires_us = \(expiresAt)
        ORDER BY partition
        """, logger: logger
      ).collect().map(Self.partitionLease)
    }
  }

  public func releasePartitions(_ partitions: [Partition], owner: String, incarnation: Int64) async throws {
    if partitions.isEmpty { return }
    _ = try await rows(Self.release(owner: owner, incarnation: incarnation, partitions: partitions))
  }

  /// Frees the leases of `partitions` (all of them when nil) that `owner`'s process
  /// `incarnation` holds. Rows are locked in partition order, as every other writer of this table
  /// locks them, so a release and another coordinator's take-over cannot deadlock.
  static func release(owner: String, incarnation: Int64, partitions: [Partition]?) -> PostgresQuery {
    let numbers = partitions?.map(\.rawValue)
    return """
      UPDATE partition_leases SET expires_us = 0 WHERE partition IN (
        SELECT partition FROM partition_leases
        WHERE owner = \(owner) AND incarnation = \(incarnation)
          AND (\(numbers)::integer[] IS NULL OR partition = ANY(\(numbers)::integer[]))
        ORDER BY partition FOR UPDATE)
      """
  }

  public func createLeases(
    _ requests: [LeaseRequest], now: Int64, fencedBy fence: PartitionFence
  ) async throws
    -> FencedLeases
  {
    let (leases, unheld) = try await createLeases(requests, now: now, fence: Optional(fence))
    return FencedLeases(leases: leases, unheld: unheld)
  }

  public func recoverExpiredLeases(
    now: Int64, skewBound: Int64, limit: Int, partitions: [Partition]
  ) async throws
    -> [RunRecord]
  {
    if partitions.isEmpty { return [] }
    return try await recoverExpiredLeases(now: now, skewBound: skewBound, limit: limit, partitions: Optional(partitions))
  }

  public func databaseClockMicros() async throws -> Int64 {
    // clock_timestamp(), not now(): now() is the transaction's start.
    let micros = try await scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint", as: Int64.self)
    guard let micros else { throw TaskStoreError.invalidArgument("the database returned no time") }
    return micros
  }

  public func publish(_ notices: [ClusterNotice]) async throws {
    let payloads = ClusterNotice.encode(notices)
    if payloads.isEmpty { return }
    _ = try await rows("SELECT pg_notify(\(Self.noticeChannel), payload) FROM unnest(\(payloads)::text[]) AS payload")
  }

  /// Listens on a connection of its own, outside the pool: a subscription that goes silent
  /// (its caller stops getting its pings back) is ended by cancelling the caller's task, which
  /// closes that connection at once. A pooled connection would go back to the pool, half-open.
  public func listen(onListening: @Sendable () async -> Void, _ receive: @Sendable ([ClusterNotice]) async -> Void) async throws {
    let connection: PostgresConnection
    do {
      connection = try await PostgresConnection.connect(
        configuration: noticeConnectionConfiguration, id: Self.noticeConnectionIDs.wrappingAdd(1, ordering: .relaxed).oldValue,
        logger: logger)
    } catch {
      throw Self.mapError(error)
    }
    var failure: (any Error)?
    do {
      try await withTaskCancellationHandler {
        try await connection.listen(on: Self.noticeChannel) { [logger] notifications in
          logger.debug("listening for cluster notices")
          await onListening()
          for try await notification in notifications {
            let notices = ClusterNotice.decode(notification.payload)
            if !notices.isEmpty { await receive(notices) }
          }
        }
      } onCancel: {
        // Ends the wait for notices, which a silent connection would never end.
        connection.close().whenComplete { _ in }
      }
    } catch {
      failure = error
    }
    // Closed before it goes, whatever happened (postgres-nio requires it); already closed
    // after a cancel, which this then only waits for.
    try? await connection.close()
    if let failure { throw Self.mapError(failure) }
  }

  /// Ids of the notice connections (for postgres-nio's logs).
  private static let noticeConnectionIDs = Atomic<Int>(1)

  /// How the notice connection connects: as the pool does.
  private var noticeConnectionConfiguration: PostgresConnection.Configuration {
    PostgresConnection.Configuration(
      host: configuration.host, port: configuration.port, username: configuration.username, password: configuration.password,
      database: configuration.database, tls: .disable)
  }

  /// The partitions among `fence`'s that its coordinator still holds with the same epoch and
  /// that have not run out at `now`, read under a share lock (inside the caller's transaction).
  static func heldPartitions(
    _ fence: PartitionFence, now: Int64, connection: PostgresConnection, logger: Logger
  ) async throws -> Set<Int32> {
    let numbers = fence.epochs.keys.map(\.rawValue)
    let epochs = fence.epochs.keys.map { fence.epochs[$0]! }
    var held = Set<Int32>()
    for try await partition in try await connection.query(
      """
      SELECT l.partition FROM partition_leases l
      JOIN unnest(\(numbers)::integer[], \(epochs)::bigint[]) AS f(partition, epoch)
        ON l.partition = f.partition AND l.epoch = f.epoch
      WHERE l.owner = \(fence.owner) AND l.expires_us > \(now)
      ORDER BY l.partition FOR SHARE OF l
      """, logger: logger
    ).decode(Int32.self) {
      held.insert(partition)
    }
    return held
  }

  static func partitionLease(_ row: PostgresRow) throws -> PartitionLease {
    let (partition, owner, epoch, expires) = try row.decode((Int32, String, Int64, Int64).self)
    return PartitionLease(partition: Partition(rawValue: partition), owner: owner, epoch: epoch, expiresMicros: expires)
  }
}
