import Foundation
import HourglassTransport

/// Everything a client needs to reach a coordinator and say who it is.
public struct HourglassClientConfiguration: Sendable, Hashable {
  /// How calls that failed with UNAVAILABLE are retried (no other status is retried), within
  /// the call's one deadline. A call that may have reached the service is retried only when
  /// repeating it is safe (Get, List, ListRuns, and Schedule, which carries its idempotency key);
  /// Delete only when it was never sent. A failed TLS handshake (a certificate or host-name
  /// problem) is not retried.
  public struct Retry: Sendable, Hashable {
    /// Attempts in all, the first included; 1 turns retries off.
    public var maxAttempts: Int
    /// The wait before the second attempt.
    public var initialBackoff: Duration
    /// The longest wait.
    public var maxBackoff: Duration
    /// How much each wait grows.
    public var multiplier: Double

    /// Creates a retry policy.
    public init(maxAttempts: Int = 4, initialBackoff: Duration = .milliseconds(100), maxBackoff: Duration = .seconds(2), multiplier: Double = 2) {
      self.maxAttempts = maxAttempts
      self.initialBackoff = initialBackoff
      self.maxBackoff = maxBackoff
      self.multiplier = multiplier
    }

    /// The wait after failed attempt `attempt` (from 1), with up to 50% of it random.
    public func backoff(afterAttempt attempt: Int, random: Double) -> Duration {
      // Grown in seconds as a Double and capped before it becomes a Duration: a Duration times a
      // factor of 2^70 would overflow.
      let exponent = Double(min(max(0, attempt - 1), 1_000))
      let grown = min(maxBackoff / .seconds(1), initialBackoff / .seconds(1) * pow(max(1, multiplier), exponent))
      return .seconds(max(0, grown) * (0.5 + 0.5 * min(1, max(0, random))))
    }
  }

  /// The coordinator's host name or address.
  public var host: String
  /// The coordinator's port.
  public var port: Int
  /// The name its certificate must carry; `host` when `nil`.
  public var serverName: String?
  /// The private CA, and this user's certificate and key (role `user`).
  public var credentials: TLSCredentials
  /// A bearer token naming the user, sent as `authorization: Bearer …` when set.
  public var bearerToken: String?
  /// The user id sent in requests; the service checks it against the authenticated identity.
  /// Leave `nil` to act as whoever the credentials say.
  public var userID: String?
  /// The deadline of a call that does not set its own.
  public var defaultTimeout: Duration
  /// How UNAVAILABLE is retried.
  public var retry: Retry

  /// Creates a configuration.
  public init(
    host: String, port: Int, serverName: String? = nil, credentials: TLSCredentials, bearerToken: String? = nil, userID: String? = nil,
    defaultTimeout: Duration = .seconds(30), retry: Retry = Retry()
  ) {
    self.host = host
    self.port = port
    self.serverName = serverName
    self.credentials = credentials
    self.bearerToken = bearerToken
    self.userID = userID
    self.defaultTimeout = defaultTimeout
    self.retry = retry
  }
}
