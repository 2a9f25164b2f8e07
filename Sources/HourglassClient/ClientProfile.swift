import Foundation
import HourglassTransport

/// Where a client finds its coordinator and credentials, as stored in a profile file
/// (`hourglass dev` writes one to `.hourglass-dev/profile.json`).
///
/// ```json
/// {"server": "127.0.0.1:7443", "server_name": "localhost", "ca": "/abs/ca.pem",
///  "cert": "/abs/user.pem", "key": "/abs/user-key.pem", "user": "alice"}
/// ```
/// Relative paths in a profile file are read from the file's folder.
public struct ClientProfile: Codable, Sendable, Hashable {
  /// The coordinator, `HOST:PORT` (`[v6]:PORT` for IPv6).
  public var server: String?
  /// The name the coordinator's certificate must carry, when not the host.
  public var serverName: String?
  /// The private CA's certificate (PEM file).
  public var ca: String?
  /// The user's certificate (PEM file).
  public var cert: String?
  /// The user's private key (PEM file).
  public var key: String?
  /// A bearer token, when the coordinator takes tokens.
  public var token: String?
  /// The user id to send; the authenticated identity's when absent.
  public var user: String?

  enum CodingKeys: String, CodingKey {
    case server
    case serverName = "server_name"
    case ca, cert, key, token, user
  }

  /// Creates a profile; every field is optional so profiles can be layered.
  public init(
    server: String? = nil, serverName: String? = nil, ca: String? = nil, cert: String? = nil, key: String? = nil, token: String? = nil,
    user: String? = nil
  ) {
    self.server = server
    self.serverName = serverName
    self.ca = ca
    self.cert = cert
    self.key = key
    self.token = token
    self.user = user
  }

  /// The environment variables read by ``resolve(flags:environment:currentDirectory:)``.
  public static var environmentKeys: [String: WritableKeyPath<ClientProfile, String?>] {
    [
      "HOURGLASS_SERVER": \.server, "HOURGLASS_SERVER_NAME": \.serverName, "HOURGLASS_CA": \.ca, "HOURGLASS_CERT": \.cert,
      "HOURGLASS_KEY": \.key, "HOURGLASS_TOKEN": \.token, "HOURGLASS_USER": \.user,
    ]
  }

  /// The profile file looked for when `HOURGLASS_PROFILE` is not set.
  public static let defaultFile = ".hourglass-dev/profile.json"

  /// Fills every field that is still `nil` from `other`.
  public func filling(from other: ClientProfile) -> ClientProfile {
    ClientProfile(
      server: server ?? other.server, serverName: serverName ?? other.serverName, ca: ca ?? other.ca, cert: cert ?? other.cert,
      key: key ?? other.key, token: Self.nonEmpty(token) ?? Self.nonEmpty(other.token), user: user ?? other.user)
  }

  /// `text`, unless it is empty: an empty token is no token (`authorization: Bearer ` with
  /// nothing after it would only be refused).
  static func nonEmpty(_ text: String?) -> String? {
    guard let text, !text.isEmpty else { return nil }
    return text
  }

  /// Reads a profile file; relative paths in it become relative to its folder.
  public static func load(file path: String) throws(ClientProfileError) -> ClientProfile {
    let data: Data
    do {
      data = try Data(contentsOf: URL(fileURLWithPath: path))
    } catch {
      throw ClientProfileError("cannot read the profile \(path): \(error.localizedDescription)")
    }
    var profile: ClientProfile
    do {
      profile = try JSONDecoder().decode(ClientProfile.self, from: data)
    } catch {
      throw ClientProfileError("the profile \(path) is not valid: \(error)")
    }
    let folder = URL(fileURLWithPath: path).deletingLastPathComponent()
    for keyPath in [\ClientProfile.ca, \.cert, \.key] {
      if let value = profile[keyPath: keyPath], !value.hasPrefix("/") {
        profile[keyPath: keyPath] = folder.appendingPathComponent(value).path
      }
    }
    return profile
  }

  /// Resolves a profile field by field: `flags` first, then `HOURGLASS_*` environment
  /// variables, then the profile file named by `HOURGLASS_PROFILE`, then
  /// `.hourglass-dev/profile.json` under `currentDirectory` if it exists.
  public static func resolve(
    flags: ClientProfile, environment: [String: String], currentDirectory: String
  ) throws(ClientProfileError)
    -> ClientProfile
  {
    var fromEnvironment = ClientProfile()
    for (name, keyPath) in environmentKeys {
      if let value = environment[name], !value.isEmpty { fromEnvironment[keyPath: keyPath] = value }
    }
    var resolved = flags.filling(from: fromEnvironment)
    if let named = environment["HOURGLASS_PROFILE"], !named.isEmpty {
      let path = named.hasPrefix("/") ? named : currentDirectory + "/" + named
      resolved = resolved.filling(from: try load(file: path))
    } else {
      let path = currentDirectory + "/" + defaultFile
      if FileManager.default.fileExists(atPath: path) {
        resolved = resolved.filling(from: try load(file: path))
      }
    }
    return resolved
  }

  /// The client configuration this profile describes, reading the PEM files.
  public func configuration() throws(ClientProfileError) -> HourglassClientConfiguration {
    guard let server else {
      throw ClientProfileError(
        "no coordinator address: pass --server HOST:PORT, set HOURGLASS_SERVER or HOURGLASS_PROFILE, or run `hourglass dev` in this folder")
    }
    guard let (host, port) = Self.hostPort(server) else {
      throw ClientProfileError("server: expected HOST:PORT, got \(server)")
    }
    guard let ca, let cert, let key else {
      throw ClientProfileError("credentials: --ca, --cert and --key (or HOURGLASS_CA/CERT/KEY, or a profile) are required")
    }
    let credentials: TLSCredentials
    do {
      credentials = try TLSCredentials(caFile: ca, certificateFile: cert, keyFile: key)
    } catch {
      throw ClientProfileError("credentials: \(error)")
    }
    return HourglassClientConfiguration(
      host: host, port: port, serverName: serverName, credentials: credentials, bearerToken: Self.nonEmpty(token), userID: user)
  }

  /// Splits `HOST:PORT` or `[v6]:PORT`.
  public static func hostPort(_ text: String) -> (String, Int)? {
    HostPort.parseDialable(text).map { ($0.host, $0.port) }
  }
}

/// A profile that could not be read or resolved; the message says what to do.
public struct ClientProfileError: Error, Sendable, Hashable, CustomStringConvertible {
  /// What is wrong.
  public var message: String

  /// Creates an error.
  public init(_ message: String) { self.message = message }

  public var description: String { message }
}
