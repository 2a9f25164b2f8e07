import Foundation
import Synchronization

#if canImport(Glibc)
  import Glibc
#endif

/// A throwaway PostgreSQL server, for tests and benchmarks: `initdb` into a folder, `pg_ctl
/// start` on a free loopback port (its Unix socket in the same folder, so no system service is
/// touched), `pg_ctl stop` at the end. PostgreSQL refuses to run as root, so as root the server
/// runs as the `postgres` user through `runuser`. The binaries come from Debian's `postgresql`
/// package (`HOURGLASS_PG_BIN` overrides their folder).
///
/// The server does not outlive the process that started it: a small watchdog shell waits for end
/// of file on a pipe whose write end only this process holds, and stops the server with
/// `pg_ctl stop -m immediate` when it sees it, that is when this process exits or is killed
/// before calling ``stop(immediately:removingDirectory:)``.
public final class ThrowawayPostgres: Sendable {
  /// Where Debian's `postgresql-15` package installs the server binaries.
  public static let binaries = ProcessInfo.processInfo.environment["HOURGLASS_PG_BIN"] ?? "/usr/lib/postgresql/15/bin"

  /// True when `initdb` and `pg_ctl` are installed.
  public static var isInstalled: Bool {
    FileManager.default.isExecutableFile(atPath: "\(binaries)/initdb") && FileManager.default.isExecutableFile(atPath: "\(binaries)/pg_ctl")
  }

  /// The server's folder (data directory, socket, log).
  public let directory: String
  /// Its TCP port on 127.0.0.1.
  public let port: Int
  /// The superuser, trusted without a password.
  public let username = "hourglass"
  /// The address it listens on.
  public let host = "127.0.0.1"
  private let runAs: [String]
  private let watchdog: Watchdog?

  private init(directory: String, port: Int, runAs: [String]) {
    self.directory = directory
    self.port = port
    self.runAs = runAs
    self.watchdog = Watchdog(
      stopCommand: runAs + ["\(Self.binaries)/pg_ctl", "-D", "\(directory)/data", "-m", "immediate", "-w", "stop"])
  }

  /// Creates and starts a server in `directory` (a new temporary folder when `nil`), with extra
  /// `-c name=value` server settings; throws with the tool's output if any step fails.
  public static func start(
    in directory: String? = nil, settings: [String] = ["max_connections=200", "shared_buffers=128MB"]
  ) throws
    -> ThrowawayPostgres
  {
    guard isInstalled else {
      throw LaunchError(message: "PostgreSQL binaries not found in \(binaries) (apt-get install postgresql)")
    }
    let directory = directory ?? FileManager.default.temporaryDirectory.path + "/hourglass-pg-\(UUID().uuidString.lowercased().prefix(8))"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    var runAs: [String] = []
    if geteuid() == 0 {
      runAs = ["/usr/sbin/runuser", "-u", "postgres", "--"]
      try run(["/bin/chown", "postgres:postgres", directory])
      try run(["/bin/chmod", "o+rx", URL(fileURLWithPath: directory).deletingLastPathComponent().path])
    }
    try run(
      runAs + ["\(binaries)/initdb", "-D", "\(directory)/data", "-U", "hourglass", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"])
    let options = (["-c listen_addresses=127.0.0.1"] + settings.map { "-c \($0)" }).joined(separator: " ")
    // A free port can be taken by someone else between probing and binding: retry a few times.
    var lastError: (any Error)?
    for _ in 0..<5 {
      let port = try freeLoopbackPort()
      do {
        try run(
          runAs + [
            "\(binaries)/pg_ctl", "-D", "\(directory)/data", "-l", "\(directory)/server.log", "-w", "-t", "60", "-o",
            "-p \(port) -k \(directory) \(options)", "start",
          ])
        return ThrowawayPostgres(directory: directory, port: port, runAs: runAs)
      } catch {
        lastError = error
      }
    }
    try? FileManager.default.removeItem(atPath: directory)
    throw lastError ?? LaunchError(message: "could not start PostgreSQL")
  }

  /// Stops the server (`immediate`: no checkpoint; `fast`: a clean shutdown) and, if asked,
  /// removes its folder.
  public func stop(immediately: Bool = true, removingDirectory: Bool = true) {
    // The watchdog stays until the server has stopped: if `pg_ctl stop` fails, it still stops
    // the server when this process ends.
    let stopped =
      (try? Self.run(runAs + ["\(Self.binaries)/pg_ctl", "-D", "\(directory)/data", "-m", immediately ? "immediate" : "fast", "-w", "stop"])) != nil
    if stopped { watchdog?.dismiss() }
    if removingDirectory { try? FileManager.default.removeItem(atPath: directory) }
  }

  /// Creates an empty database (a fresh name when `nil`) and returns its name.
  @discardableResult
  public func createDatabase(_ name: String? = nil) throws -> String {
    let name = name ?? "t_\(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16))"
    try Self.run(["\(Self.binaries)/createdb", "-h", host, "-p", String(port), "-U", username, "-T", "template0", name])
    return name
  }

  /// ``start(in:settings:)`` from async code: the same steps on a thread of their own. Each
  /// step waits for a child process (`initdb`, `pg_ctl`) for up to seconds, and Swift's
  /// cooperative pool has one thread per core: a test suite starting a few servers at once
  /// would otherwise leave no thread for anything else (seen as 3 s stalls of a whole run).
  public static func start(
    in directory: String? = nil, settings: [String] = ["max_connections=200", "shared_buffers=128MB"]
  ) async throws
    -> ThrowawayPostgres
  {
    try await onOwnThread { try start(in: directory, settings: settings) }
  }

  /// ``stop(immediately:removingDirectory:)`` from async code, on a thread of its own.
  public func stop(immediately: Bool = true, removingDirectory: Bool = true) async {
    try? await Self.onOwnThread { self.stop(immediately: immediately, removingDirectory: removingDirectory) }
  }

  /// ``createDatabase(_:)`` from async code, on a thread of its own.
  @discardableResult
  public func createDatabase(_ name: String? = nil) async throws -> String {
    try await Self.onOwnThread { try self.createDatabase(name) }
  }

  /// Runs blocking `body` on a new thread and resumes with its outcome.
  static func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
      Thread { continuation.resume(with: Result(catching: body)) }.start()
    }
  }

  /// A step of starting or stopping the server failed; the message has the tool's output.
  public struct LaunchError: Error, CustomStringConvertible {
    /// What failed, with the tool's output.
    public var message: String
    public var description: String { message }
  }

  /// Runs a command to completion with posix_spawn and waitpid. Its output goes to a temporary
  /// file, not a pipe: `pg_ctl start` leaves a server running that would hold a pipe open, and
  /// Foundation's `Process` was seen to miss the exit of `runuser … pg_ctl start`.
  @discardableResult
  static func run(_ arguments: [String]) throws -> String {
    let outputPath = FileManager.default.temporaryDirectory.path + "/hourglass-pg-cmd-\(UUID().uuidString.prefix(8)).log"
    defer { try? FileManager.default.removeItem(atPath: outputPath) }
    let (pid, spawned) = spawn(arguments, outputPath: outputPath)
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
  public static func freeLoopbackPort() throws -> Int {
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

/// Runs `stopCommand` once the process that created it has gone: a shell reads a pipe whose write
/// end (close-on-exec, so no other child inherits it) only this process holds; end of file there
/// means this process exited or was killed.
final class Watchdog: Sendable {
  /// The watchdog shell's process id.
  let pid: pid_t
  private let writeEnd: Int32
  private let ended = Atomic<Bool>(false)

  init?(stopCommand: [String]) {
    var ends: [Int32] = [0, 0]
    guard pipe(&ends) == 0 else { return nil }
    _ = fcntl(ends[0], F_SETFD, FD_CLOEXEC)
    _ = fcntl(ends[1], F_SETFD, FD_CLOEXEC)
    // `read` returns only at end of file: nothing is ever written to the pipe.
    let arguments = ["/bin/sh", "-c", "read -r _ignored; exec \"$@\"", "hourglass-pg-watchdog"] + stopCommand
    let (pid, spawned) = spawn(arguments, standardInput: ends[0])
    close(ends[0])
    guard spawned == 0 else {
      close(ends[1])
      return nil
    }
    self.pid = pid
    self.writeEnd = ends[1]
  }

  /// Ends the watchdog without running its command (the server is being stopped normally).
  func dismiss() {
    guard !ended.exchange(true, ordering: .relaxed) else { return }
    kill(pid, SIGKILL)
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    close(writeEnd)
  }

  /// Closes this process's end of the pipe, as the kernel does when this process dies; the
  /// watchdog then runs its command. The caller reaps ``pid``.
  func closeLifeline() {
    guard !ended.exchange(true, ordering: .relaxed) else { return }
    close(writeEnd)
  }
}

/// Starts `arguments` (an absolute path first) with `posix_spawn`: standard input from
/// `standardInput` (else `/dev/null`), standard output and error to the file `outputPath`
/// (created or truncated), and no other descriptor of ours. Returns the child's pid and
/// `posix_spawn`'s result (0 when it started).
func spawn(_ arguments: [String], standardInput: Int32? = nil, outputPath: String = "/dev/null") -> (pid: pid_t, result: Int32) {
  var actions = posix_spawn_file_actions_t()
  posix_spawn_file_actions_init(&actions)
  defer { posix_spawn_file_actions_destroy(&actions) }
  if let standardInput {
    posix_spawn_file_actions_adddup2(&actions, standardInput, 0)
  } else {
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
  }
  posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
  posix_spawn_file_actions_adddup2(&actions, 1, 2)
  // Nothing else of ours is inherited: a server started here must not hold, say, a lock file
  // descriptor of the test run after the run has gone.
  closeInheritedDescriptors(&actions)
  var cArguments = arguments.map { strdup($0) } + [nil]
  defer { for pointer in cArguments { free(pointer) } }
  var pid: pid_t = 0
  let result = posix_spawn(&pid, arguments[0], &actions, nil, &cArguments, environ)
  return (pid, result)
}

/// Adds "close every descriptor from 3 up" to `actions`, so a spawned child inherits only its
/// standard streams. glibc (2.34 and later) has this as `posix_spawn_file_actions_addclosefrom_np`,
/// which Swift's Glibc module does not import (it is a GNU extension), so it is looked up by name;
/// on a C library without it, children inherit descriptors as before.
func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) {
  typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
  guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return }
  _ = unsafeBitCast(symbol, to: AddCloseFrom.self)(&actions, 3)
}
