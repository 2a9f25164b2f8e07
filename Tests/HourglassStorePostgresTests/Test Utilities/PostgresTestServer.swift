import Foundation
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// A throwaway PostgreSQL server for tests: `initdb` into a temporary folder, `pg_ctl start` on a
/// free loopback port (its Unix socket in the same folder, so no system service is touched), and
/// `pg_ctl stop` plus removal of the folder at the end. PostgreSQL refuses to run as root, so when
/// the tests run as root the server runs as the `postgres` user through `runuser`.
final class PostgresTestServer: Sendable {
  /// Where Debian's `postgresql-15` package installs the server binaries.
  static let binaries =
    ProcessInfo.processInfo.environment["HOURGLASS_PG_BIN"]
    ?? "/usr/lib/postgresql/15/bin"

  /// True when `initdb` and `pg_ctl` are installed.
  static var isInstalled: Bool {
    FileManager.default.isExecutableFile(atPath: "\(binaries)/initdb")
      && FileManager.default.isExecutableFile(atPath: "\(binaries)/pg_ctl")
  }

  /// True when the environment demands PostgreSQL tests run (and fail if they cannot).
  static var isRequired: Bool {
    ProcessInfo.processInfo.environment["HOURGLASS_REQUIRE_POSTGRES"] == "1"
  }

  /// The server the current suite runs against (set by ``PostgresServerTrait``).
  @TaskLocal static var current: PostgresTestServer?

  let directory: String
  let port: Int
  let username = "hourglass"
  let host = "127.0.0.1"
  private let runAs: [String]

  private init(directory: String, port: Int, runAs: [String]) {
    self.directory = directory
    self.port = port
    self.runAs = runAs
  }

  /// Creates and starts a server; throws with the tool's output if any step fails.
  static func start() throws -> PostgresTestServer {
    guard isInstalled else {
      throw LaunchError(message: "PostgreSQL binaries not found in \(binaries) (apt-get install postgresql)")
    }
    let directory =
      FileManager.default.temporaryDirectory.path
      + "/hourglass-pg-\(UUID().uuidString.lowercased().prefix(8))"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    var runAs: [String] = []
    if geteuid() == 0 {
      runAs = ["/usr/sbin/runuser", "-u", "postgres", "--"]
      try run(["/bin/chown", "postgres:postgres", directory])
    }
    try run(
      runAs + [
        "\(binaries)/initdb", "-D", "\(directory)/data", "-U", "hourglass", "--auth=trust",
        "-E", "UTF8", "--no-sync", "--no-instructions",
      ])
    // A free port can be taken by someone else between probing and binding: retry a few times.
    var lastError: (any Error)?
    for _ in 0..<5 {
      let port = try freeLoopbackPort()
      let server = PostgresTestServer(directory: directory, port: port, runAs: runAs)
      do {
        try run(
          runAs + [
            "\(binaries)/pg_ctl", "-D", "\(directory)/data", "-l", "\(directory)/server.log", "-w",
            "-t", "60", "-o",
            "-p \(port) -k \(directory) -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=128MB",
            "start",
          ])
        return server
      } catch {
        lastError = error
      }
    }
    try? FileManager.default.removeItem(atPath: directory)
    throw lastError ?? LaunchError(message: "could not start PostgreSQL")
  }

  /// Stops the server immediately and removes its folder.
  func stop() {
    _ = try? Self.run(runAs + ["\(Self.binaries)/pg_ctl", "-D", "\(directory)/data", "-m", "immediate", "-w", "stop"])
    try? FileManager.default.removeItem(atPath: directory)
  }

  /// Creates an empty database and returns its name.
  func createDatabase() throws -> String {
    let name = "t_\(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16))"
    try Self.run([
      "\(Self.binaries)/createdb", "-h", host, "-p", String(port), "-U", username, "-T",
      "template0", name,
    ])
    return name
  }

  struct LaunchError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
  }

  /// Runs a command to completion with posix_spawn and waitpid. Its output goes to a temporary
  /// file, not a pipe: `pg_ctl start` leaves a server running that would hold a pipe open, and
  /// Foundation's `Process` was seen to miss the exit of `runuser … pg_ctl start`.
  @discardableResult
  static func run(_ arguments: [String]) throws -> String {
    let outputPath =
      FileManager.default.temporaryDirectory.path
      + "/hourglass-pg-cmd-\(UUID().uuidString.prefix(8)).log"
    defer { try? FileManager.default.removeItem(atPath: outputPath) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    var cArguments = arguments.map { strdup($0) } + [nil]
    defer { for pointer in cArguments { free(pointer) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, arguments[0], &actions, nil, &cArguments, environ)
    guard spawned == 0 else {
      throw LaunchError(message: "\(arguments.joined(separator: " ")) failed (spawn \(spawned)): ")
    }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
    guard status == 0 else {
      throw LaunchError(message: "\(arguments.joined(separator: " ")) failed (\(status)): \(text)")
    }
    return text
  }

  /// Asks the kernel for a free TCP port on 127.0.0.1.
  static func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw LaunchError(message: "socket() failed") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = 0
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    guard bound == 0 else { throw LaunchError(message: "bind() failed") }
    let named = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard named == 0 else { throw LaunchError(message: "getsockname() failed") }
    return Int(UInt16(bigEndian: address.sin_port))
  }
}

/// Starts one throwaway server around a whole suite and stops it afterwards.
struct PostgresServerTrait: SuiteTrait, TestScoping {
  var isRecursive: Bool { false }

  func provideScope(
    for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
  ) async throws {
    let server = try PostgresTestServer.start()
    do {
      try await PostgresTestServer.$current.withValue(server) { try await function() }
    } catch {
      server.stop()
      throw error
    }
    server.stop()
  }
}

extension Trait where Self == PostgresServerTrait {
  /// Runs the suite against a throwaway PostgreSQL server.
  static var throwawayPostgres: Self { PostgresServerTrait() }
}

/// PostgreSQL suites run when the server binaries are installed; when they are not, they are
/// reported as skipped, unless `HOURGLASS_REQUIRE_POSTGRES=1`, in which case they run and fail.
let postgresAvailable: Bool = PostgresTestServer.isInstalled || PostgresTestServer.isRequired
