import Foundation
import HourglassPostgresLauncher
import Testing

/// The PostgreSQL server the current suite runs against, and whether one must be there.
public enum PostgresTestServer {
  /// True when the environment demands PostgreSQL tests run (and fail if they cannot).
  public static var isRequired: Bool {
    ProcessInfo.processInfo.environment["HOURGLASS_REQUIRE_POSTGRES"] == "1"
  }

  /// The server the current suite runs against (set by ``PostgresServerTrait``).
  @TaskLocal public static var current: ThrowawayPostgres?
}

/// Starts one throwaway server around a whole suite and stops it afterwards.
public struct PostgresServerTrait: SuiteTrait, TestScoping {
  /// The server's `max_connections`: enough for every test of the suite running at once.
  var maxConnections = 200

  public var isRecursive: Bool { false }

  public func provideScope(
    for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
  ) async throws {
    let server = try await ThrowawayPostgres.start(settings: ["max_connections=\(maxConnections)", "shared_buffers=128MB"])
    do {
      try await PostgresTestServer.$current.withValue(server) { try await function() }
    } catch {
      await server.stop()
      throw error
    }
    await server.stop()
  }
}

extension Trait where Self == PostgresServerTrait {
  /// Runs the suite against a throwaway PostgreSQL server.
  public static var throwawayPostgres: Self { PostgresServerTrait() }

  /// Runs the suite against a throwaway PostgreSQL server accepting `maxConnections`.
  public static func throwawayPostgres(maxConnections: Int) -> Self { PostgresServerTrait(maxConnections: maxConnections) }
}

/// PostgreSQL suites run when the server binaries are installed; when they are not, they are
/// reported as skipped, unless `HOURGLASS_REQUIRE_POSTGRES=1`, in which case they run and fail.
public let postgresAvailable: Bool = ThrowawayPostgres.isInstalled || PostgresTestServer.isRequired
