import ArgumentParser
import Foundation
import HourglassCertificates
import HourglassCore
import HourglassExecutor
import HourglassRPC
import HourglassTransport
import Logging
import ServiceLifecycle

/// `hourglass executor`: connects to every coordinator it is given with an executor certificate
/// and runs the leases they push, until SIGTERM or SIGINT drains it.
struct ExecutorCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "executor",
    abstract: "Run an executor: connect to the coordinators and run the tasks they lease.",
    discussion: """
      The executor authenticates with a certificate whose role (OU) is `executor`. On SIGTERM or \
      SIGINT it stops taking leases, lets running tasks finish for --drain-grace, kills what is \
      left, and exits. With several --coordinator addresses (the coordinators of a cluster) it \
      holds a stream to each at once and shares its slots between them; one that cannot be \
      reached is retried with backoff while the others go on. In a cluster it also connects to \
      every coordinator the others announce (those started with --advertise), so one address is \
      enough to join; --no-discover keeps it to its --coordinator addresses.

      Example:
        hourglass executor --coordinator coord-1.example:7443 --ca ca.pem --cert executor.pem \\
          --key executor-key.pem --slots 4 --operators exec
      """
  )

  @Option(name: .customLong("coordinator"), help: "A coordinator's HOST:PORT; repeat it for each coordinator of a cluster (the executor connects to all).")
  var coordinators: [String] = []

  @Option(name: .customLong("ca"), help: "The private CA's certificate (PEM).")
  var caFile: String

  @Option(name: .customLong("cert"), help: "This executor's certificate (PEM, role executor).")
  var certificateFile: String

  @Option(name: .customLong("key"), help: "This executor's private key (PEM).")
  var keyFile: String

  @Option(name: .customLong("id"), help: "The executor's name (default: the certificate's common name).")
  var executorID: String?

  @Option(name: .customLong("slots"), help: "Runs at once (default: the number of cores).")
  var slots: Int = ProcessInfo.processInfo.activeProcessorCount

  @Option(name: .customLong("operators"), help: "Operators to offer, comma-separated: exec, noop.")
  var operators: String = "exec,noop"

  @Flag(name: .customLong("discover"), inversion: .prefixedNo, help: "Also connect to the coordinators the cluster announces.")
  var discover = true

  @Option(name: .customLong("drain-grace"), help: "How long running tasks may finish after SIGTERM, e.g. 30s, 2m.")
  var drainGrace: String = "30s"

  @Option(
    name: .customLong("temporary-directory"),
    help:
      "Where exec runs get their private directories (under hourglass-ID, locked and swept at start; under hourglass-ID@XXXXXX if another user took that name; best one other users cannot write)."
  )
  var temporaryDirectory: String = "/tmp"

  @Option(
    name: .customLong("run-as"),
    help: "Run exec tasks as this user (the executor must run as root), with no supplementary groups and no_new_privs.")
  var runAs: String?

  @OptionGroup var observability: ObservabilityOptions

  func validate() throws {
    if coordinators.isEmpty { throw ValidationError("--coordinator HOST:PORT is required") }
    for address in coordinators where HostPort.parseDialable(address) == nil {
      throw ValidationError("--coordinator \(address) is not HOST:PORT")
    }
    var seen = Set<String>()
    for address in coordinators where !seen.insert(address).inserted {
      throw ValidationError("--coordinator \(address) is given twice")
    }
    if (try? DurationText.parse(drainGrace, field: "--drain-grace")) == nil {
      throw ValidationError("--drain-grace \(drainGrace) is not a duration such as 30s or 2m")
    }
    if slots < 1 { throw ValidationError("--slots must be at least 1") }
    if let runAs, ExecOperator.RunAs.user(named: runAs) == nil { throw ValidationError("--run-as \(runAs): no such user") }
  }

  func run() async throws {
    observability.bootstrapLogging()
    var logger = Logger(label: "hourglass.executor")
    logger.logLevel = .info

    let credentials: TLSCredentials
    do {
      credentials = try TLSCredentials(caFile: caFile, certificateFile: certificateFile, keyFile: keyFile)
    } catch {
      throw ValidationError("\(error)")
    }
    let name = try executorID ?? Self.commonName(fromPEM: credentials.certificatePEM)

    var configuration = ExecutorConfiguration.defaults
    configuration.executorID = name
    configuration.slots = slots
    configuration.operators = operators.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    configuration.drainGrace = .microseconds(try DurationText.parse(drainGrace, field: "--drain-grace"))
    configuration.temporaryDirectory = temporaryDirectory
    configuration.exec.runAs = runAs.flatMap { ExecOperator.RunAs.user(named: $0) }
    do {
      try configuration.validate()
    } catch {
      throw ValidationError("\(error)")
    }

    var connections: [RPCTLSConnection] = []
    for address in coordinators {
      let (host, port) = HostPort.parseDialable(address)!
      connections.append(
        try RPCTLSConnection(configuration: .init(host: host, port: port, credentials: credentials), logger: logger))
    }
    let metrics = try await observability.metrics(logger: logger)
    // A stream to every coordinator: each dispatches its own partitions, and the executor's
    // slots follow whichever of them has runs (docs/executor.md, "Several coordinators").
    // And to every coordinator the cluster announces, with the same certificate.
    let discovery = CoordinatorDiscovery(
      connect: { [logger] address in
        guard let (host, port) = HostPort.parseDialable(address) else { throw ValidationError("\(address) is not HOST:PORT") }
        return try RPCTLSConnection(configuration: .init(host: host, port: port, credentials: credentials), logger: logger)
      },
      release: { transport in await (transport as? RPCTLSConnection)?.close() })
    let executor = Executor(
      configuration: configuration, transports: connections, logger: logger, metricsFactory: metrics.factory, discovery: discover ? discovery : nil)
    var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
      .init(service: executor, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup)
    ]
    if let server = metrics.server { services.append(.init(service: server)) }
    let group = ServiceGroup(
      configuration: .init(
        services: services,
        gracefulShutdownSignals: [.sigterm, .sigint],
        logger: logger
      ))
    try await group.run()
    for connection in connections { await connection.close() }
  }

  /// The common name of the first certificate in `pem`.
  static func commonName(fromPEM pem: String) throws -> String {
    let lines = pem.split(whereSeparator: \.isNewline)
    guard let begin = lines.firstIndex(where: { $0.hasPrefix("-----BEGIN CERTIFICATE") }),
      let end = lines[begin...].firstIndex(where: { $0.hasPrefix("-----END CERTIFICATE") }),
      let der = Data(base64Encoded: lines[(begin + 1)..<end].joined())
    else { throw ValidationError("--cert holds no PEM certificate; pass --id") }
    return try CertificateIdentity(derEncoded: Array(der)).name
  }
}
