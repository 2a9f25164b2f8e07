import Foundation
import HourglassClient
import Testing

@Suite("Client profile resolution")
struct ClientProfileTests {
  let folder: String

  init() throws {
    folder = NSTemporaryDirectory() + "hourglass-profile-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: folder + "/.hourglass-dev", withIntermediateDirectories: true)
  }

  func write(_ json: String, to path: String) throws {
    try json.write(toFile: path, atomically: true, encoding: .utf8)
  }

  @Test("flags win over environment, environment over the profile file, field by field")
  func precedence() throws {
    try write(#"{"server": "file:1", "ca": "/file/ca.pem", "cert": "/file/user.pem", "key": "/file/key.pem", "user": "file-user"}"#, to: folder + "/named.json")
    let resolved = try ClientProfile.resolve(
      flags: ClientProfile(server: "flag:1"),
      environment: ["HOURGLASS_PROFILE": folder + "/named.json", "HOURGLASS_SERVER": "env:1", "HOURGLASS_CERT": "/env/user.pem"],
      currentDirectory: folder)
    #expect(resolved.server == "flag:1")
    #expect(resolved.cert == "/env/user.pem")
    #expect(resolved.ca == "/file/ca.pem")
    #expect(resolved.key == "/file/key.pem")
    #expect(resolved.user == "file-user")
  }

  @Test("without HOURGLASS_PROFILE, .hourglass-dev/profile.json in the current folder is used; relative paths are read from its folder")
  func defaultFile() throws {
    try write(
      #"{"server": "127.0.0.1:7443", "ca": "certs/ca.pem", "cert": "/abs/user.pem", "key": "certs/user-key.pem"}"#, to: folder + "/.hourglass-dev/profile.json")
    let resolved = try ClientProfile.resolve(flags: ClientProfile(), environment: [:], currentDirectory: folder)
    #expect(resolved.server == "127.0.0.1:7443")
    #expect(resolved.ca == folder + "/.hourglass-dev/certs/ca.pem")
    #expect(resolved.cert == "/abs/user.pem")
    #expect(resolved.key == folder + "/.hourglass-dev/certs/user-key.pem")
  }

  @Test("HOURGLASS_PROFILE replaces the default file, and a missing one is an error naming it")
  func namedProfileMissing() throws {
    try write(#"{"server": "default:1"}"#, to: folder + "/.hourglass-dev/profile.json")
    #expect(throws: ClientProfileError.self) {
      try ClientProfile.resolve(flags: ClientProfile(), environment: ["HOURGLASS_PROFILE": "nope.json"], currentDirectory: folder)
    }
    do {
      _ = try ClientProfile.resolve(flags: ClientProfile(), environment: ["HOURGLASS_PROFILE": "nope.json"], currentDirectory: folder)
    } catch {
      #expect(error.message.contains(folder + "/nope.json"))
    }
  }

  @Test("nothing configured: the error says how to configure a server")
  func nothingConfigured() throws {
    let resolved = try ClientProfile.resolve(flags: ClientProfile(), environment: [:], currentDirectory: folder)
    do {
      _ = try resolved.configuration()
      Issue.record("expected an error")
    } catch {
      #expect(error.message.contains("--server"))
      #expect(error.message.contains("hourglass dev"))
    }
  }

  @Test("a malformed profile is refused with its path")
  func malformed() throws {
    try write("{not json", to: folder + "/.hourglass-dev/profile.json")
    do {
      _ = try ClientProfile.resolve(flags: ClientProfile(), environment: [:], currentDirectory: folder)
      Issue.record("expected an error")
    } catch {
      #expect(error.message.contains("profile.json"))
    }
  }

  @Test("HOST:PORT parsing", arguments: [("127.0.0.1:7443", "127.0.0.1", 7443), ("[::1]:9", "::1", 9), ("host.example:1", "host.example", 1)])
  func hostPort(text: String, host: String, port: Int) {
    let parsed = ClientProfile.hostPort(text)
    #expect(parsed?.0 == host)
    #expect(parsed?.1 == port)
  }

  @Test("bad addresses are refused", arguments: ["127.0.0.1", ":7443", "host:0", "host:70000", "host:x"])
  func badHostPort(text: String) {
    #expect(ClientProfile.hostPort(text) == nil)
  }

  @Test("retry backoff grows and is capped")
  func backoff() {
    let retry = HourglassClientConfiguration.Retry(maxAttempts: 5, initialBackoff: .milliseconds(100), maxBackoff: .milliseconds(300), multiplier: 2)
    #expect(retry.backoff(afterAttempt: 1, random: 1) == .milliseconds(100))
    #expect(retry.backoff(afterAttempt: 2, random: 1) == .milliseconds(200))
    #expect(retry.backoff(afterAttempt: 3, random: 1) == .milliseconds(300))
    #expect(retry.backoff(afterAttempt: 3, random: 0) == .milliseconds(150))
  }
}
