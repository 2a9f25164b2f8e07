import ArgumentParser
import CoreMetrics
import Foundation
import HourglassClient
import HourglassCoordinator
import HourglassExecutor
import HourglassObservability
import HourglassRPC
import HourglassStoreSQLite
import HourglassTransport
import Logging
import ServiceLifecycle

#if canImport(Glibc)
  import Glibc
#endif

/// `hourglass dev`: a whole Hourglass in one process, for trying it out and for development.
///
/// A coordinator on SQLite and N executors, connected over real mutual TLS on loopback with a
/// development CA made on first start. Client commands run in the same folder find it through
/// `DIR/profile.json`.
struct DevCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "dev",
    abstract: "Run a coordinator and executors in one process, on SQLite, for development.",
    discussion: """
      Creates DIR (default .hourglass-dev) with a development CA and certificates (kept across \
      runs), the SQLite store tasks.db, and profile.json, which client commands run in this \
      folder use (elsewhere: HOURGLASS_PROFILE=DIR/profile.json). Ctrl-C stops gracefully: \
      executors stop taking runs and let running ones finish, then the coordinator stops.
      """
  )

  @Option(help: "Folder for the store, the certificates, profile.json and the runs' directories.")
  var dataDir: String = ".hourglass-dev"

  @Option(help: "Port for the coordinator on 127.0.0.1 (0: any free port).")
  var port: Int = 7443

  @Option(help: "How many executors to run.")
  var executors: Int = 2

  @Option(help: "Run slots per executor.")
  var slots: Int = 4

  @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
  var logLevel: String = "notice"

  @Option(help: "Log format: text or json (one JSON object per line).")
  var logFormat: LogFormat = .text

  @Option(help: "Serve Prometheus metrics of the coordinator and the executors at http://HOST:PORT/metrics; \"off\" for none.")
  var metricsListen: String = "127.0.0.1:9464"

  func validate() throws {
    if !(0...65_535).contains(port) { throw ValidationError("--port must be between 0 and 65535") }
    if !(1...64).contains(executors) { throw ValidationError("--executors must be between 1 and 64") }
    if !(1...1024).contains(slots) { throw ValidationError("--slots must be between 1 and 1024") }
    if Logger.Level(rawValue: logLevel) == nil { throw ValidationError("--log-level: \(logLevel) is not a log level") }
    if metricsListen != "off" { _ = try CoordinatorCommand.hostPort(metricsListen, option: "--metrics-listen") }
  }

  func run() async throws {
    let format = logFormat
    LoggingSystem.bootstrap { label in format.makeHandler(label: label) }
    var logger = Logger(label: "hourglass.dev")
    logger.logLevel = Logger.Level(rawValue: logLevel) ?? .notice
    let directory = URL(fileURLWithPath: dataDir, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath)).standardizedFileURL.path
    let executorNames = (1...executors).map { "dev-executor-\($0)" }
    let files = try CertificateFiles.ensure(
      in: directory + "/certs", hosts: ["localhost", "127.0.0.1", "::1"], user: ProcessInfo.processInfo.environment["USER"] ?? "developer",
      executors: executorNames.map { (file: $0, name: $0) })
    for line in files.summary { logger.notice("\(line)") }

    let store = try await SQLiteTaskStore(configuration: .defaults(path: directory + "/tasks.db"), logger: logger)
    let runsDirectory = directory + "/runs"
    try FileManager.default.createDirectory(atPath: runsDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    let coordinatorCredentials = try TLSCredentials(
      caFile: files.ca, certificateFile: files.certificate("coordinator"), keyFile: files.key("coordinator"))
    var configuration = CoordinatorConfiguration.defaults
    configuration.coordinatorID = "dev-coordinator"
    // One registry for the coordinator and every executor: executor metrics carry an
    // `executor` label and never share a name with the coordinator's.
    let metrics = try await ObservabilityOptions.metrics(listen: metricsListen == "off" ? nil : metricsListen, logger: logger)
    let coordinator = try Coordinator(
      configuration: configuration, store: store, tls: .init(host: "127.0.0.1", port: port, credentials: coordinatorCredentials), logger: logger,
      metricsFactory: metrics.factory)

    var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: coordinator)]
    if let server = metrics.server { services.append(.init(service: server)) }
    for name in executorNames {
      var executorConfiguration = ExecutorConfiguration.defaults
      executorConfiguration.executorID = name
      executorConfiguration.slots = slots
      executorConfiguration.operators = ["exec", "noop"]
      // Runs in the data folder, not /tmp: two dev setups side by side (each with its own
      // folder) keep their executors' run directories, and their locks, apart.
      executorConfiguration.temporaryDirectory = runsDirectory
      let credentials = try TLSCredentials(caFile: files.ca, certificateFile: files.certificate(name), keyFile: files.key(name))
      services.append(
        .init(
          service: DeferredExecutor(
            coordinator: coordinator, configuration: executorConfiguration, credentials: credentials, logger: logger, metricsFactory: metrics.factory)))
    }
    let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await withThrowingTaskGroup(of: Void.self) { tasks in
      tasks.addTask { try await group.run() }
      do {
        // The port is known once the coordinator listens (it may be chosen by the system).
        guard let bound = try await coordinator.port() else { return }
        let profile = ClientProfile(server: "127.0.0.1:\(bound)", ca: files.ca, cert: files.certificate("user"), key: files.key("user"))
        try Self.write(profile, to: directory + "/profile.json")
        // Unbuffered: scripts and tests wait for the banner on a pipe.
        var banner = Self.banner(port: bound, executors: executors, directory: directory)
        if let server = metrics.server {
          banner = "Metrics: http://\(server.localAddress.ipAddress ?? "127.0.0.1"):\(server.port)/metrics\n" + banner
        }
        FileHandleOutput.standardOutput.write(banner + "\n")
      } catch {
        await group.triggerGracefulShutdown()
        throw error
      }
      try await tasks.waitForAll()
    }
    try await store.close()
    // At the default log level nothing else says so.
    FileHandleOutput.standardOutput.write("Stopped: the coordinator and its executors drained; the store is closed.\n")
  }

  /// Writes the profile atomically, readable only by its owner (it names a private key).
  static func write(_ profile: ClientProfile, to path: String) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    let data = try encoder.encode(profile)
    let temporary = path + ".tmp"
    guard FileManager.default.createFile(atPath: temporary, contents: data, attributes: [.posixPermissions: 0o600]) else {
      throw ValidationError("cannot write \(temporary)")
    }
    guard rename(temporary, path) == 0 else {
      throw ValidationError("cannot write \(path): \(String(cString: strerror(errno)))")
    }
  }

  static func banner(port: Int, executors: Int, directory: String) -> String {
    let relative =
      directory.hasPrefix(FileManager.default.currentDirectoryPath + "/")
      ? String(directory.dropFirst(FileManager.default.currentDirectoryPath.count + 1)) : directory
    return """
      Hourglass dev is running: coordinator on 127.0.0.1:\(port), \(executors) executor\(executors == 1 ? "" : "s"), data in \(relative)
      Client commands in this folder connect through \(relative)/profile.json; elsewhere:
        export HOURGLASS_PROFILE=\(directory)/profile.json
      Try:
        printf '#!/bin/sh\\necho hello from $HOURGLASS_RUN_ID\\n' > hello.sh
        hourglass schedule --in 5s --file hello.sh
        hourglass list
      Ctrl-C stops.
      """
  }
}

/// An executor that connects once the coordinator it runs beside knows its port (which may be
/// chosen by the system when `--port 0`).
final class DeferredExecutor: Service, Sendable {
  private let coordinator: Coordinator
  private let configuration: ExecutorConfiguration
  private let credentials: TLSCredentials
  private let logger: Logger
  private let metricsFactory: any MetricsFactory

  init(coordinator: Coordinator, configuration: ExecutorConfiguration, credentials: TLSCredentials, logger: Logger, metricsFactory: any MetricsFactory) {
    self.coordinator = coordinator
    self.configuration = configuration
    self.credentials = credentials
    self.logger = logger
    self.metricsFactory = metricsFactory
  }

  func run() async throws {
    guard let port = try await coordinator.port() else { return }
    let connection = try RPCTLSConnection(configuration: .init(host: "127.0.0.1", port: port, credentials: credentials), logger: logger)
    let executor = Executor(configuration: configuration, transport: connection, logger: logger, metricsFactory: metricsFactory)
    try await executor.run()
    await connection.close()
  }
}
