import ArgumentParser
import Foundation
import HourglassCertificates

/// `hourglass certs`: a private CA and certificates for development, made in-process.
struct CertsCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "certs",
    abstract: "Make development certificates.",
    subcommands: [Init.self]
  )

  /// `hourglass certs init --dir DIR`.
  struct Init: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Create a CA and coordinator, executor, user and token-client certificates in DIR (existing files are kept).",
      discussion: """
        Files: ca.pem (+ ca-key.pem), coordinator.pem, executor.pem, user.pem (role user, named by \
        --user: its holder is that user) and client.pem (role client: no identity of its own, for \
        callers that name themselves with a bearer token, see `hourglass coordinator --tokens`). \
        Each NAME.pem has its key in NAME-key.pem, mode 0600.
        """
    )

    @Option(help: "Folder to write the PEM files to.")
    var dir: String

    @Option(help: "Host names and IP addresses the coordinator certificate is valid for.")
    var host: [String] = ["localhost", "127.0.0.1", "::1"]

    @Option(help: "Name of the user certificate.")
    var user: String = ProcessInfo.processInfo.environment["USER"] ?? "developer"

    @Option(help: "Name of the executor certificate.")
    var executor: String = "executor-1"

    func run() async throws {
      let files = try CertificateFiles.ensure(in: dir, hosts: host, user: user, executors: [(file: "executor", name: executor)])
      for line in files.summary { print(line) }
    }
  }
}

/// The PEM files of a development setup, created if missing.
struct CertificateFiles {
  var directory: String
  var summary: [String] = []

  var ca: String { directory + "/ca.pem" }
  var caKey: String { directory + "/ca-key.pem" }
  func certificate(_ name: String) -> String { directory + "/\(name).pem" }
  func key(_ name: String) -> String { directory + "/\(name)-key.pem" }

  /// Creates the CA (unless present) and the coordinator, executor and user certificates
  /// (each unless present). Private keys are written with mode 0600. Each executor gets its
  /// own certificate, `FILE.pem`, whose common name is its executor id.
  static func ensure(in directory: String, hosts: [String], user: String, executors: [(file: String, name: String)]) throws -> CertificateFiles {
    var files = CertificateFiles(directory: directory)
    let manager = FileManager.default
    try manager.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    let ca: DevelopmentCA
    if manager.fileExists(atPath: files.ca), manager.fileExists(atPath: files.caKey) {
      ca = try DevelopmentCA(
        certificatePEM: String(contentsOfFile: files.ca, encoding: .utf8), privateKeyPEM: String(contentsOfFile: files.caKey, encoding: .utf8))
    } else {
      ca = try DevelopmentCA()
      try write(ca.authority, certificate: files.ca, key: files.caKey)
      files.summary.append("created CA \(files.ca)")
    }
    let ips = hosts.filter { $0.contains(":") || $0.allSatisfy { $0.isNumber || $0 == "." } }
    let names = hosts.filter { !ips.contains($0) }
    // `client`: a certificate that carries no user identity, for callers who name themselves with
    // a bearer token (coordinator --tokens).
    let wanted: [(String, String, CertificateRole, [String], [String])] =
      [("coordinator", "coordinator", .coordinator, names, ips), ("user", user, .user, [], []), ("client", "token-client", .client, [], [])]
      + executors.map { ($0.file, $0.name, .executor, [], []) }
    for (file, name, role, dns, addresses) in wanted where !manager.fileExists(atPath: files.certificate(file)) {
      let issued = try ca.issue(name: name, role: role, dnsNames: dns, ipAddresses: addresses)
      try write(issued, certificate: files.certificate(file), key: files.key(file))
      files.summary.append("created \(role.rawValue) certificate \(files.certificate(file)) for \(name)")
    }
    return files
  }

  private static func write(_ issued: IssuedCertificate, certificate: String, key: String) throws {
    try issued.certificatePEM.write(toFile: certificate, atomically: true, encoding: .utf8)
    guard FileManager.default.createFile(atPath: key, contents: Data(issued.privateKeyPEM.utf8), attributes: [.posixPermissions: 0o600]) else {
      throw ValidationError("cannot write the private key \(key)")
    }
  }
}
