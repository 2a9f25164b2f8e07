import HourglassCertificates
import HourglassRPC
import Logging
import NIOCore
import NIOSSL
import NIOTLS

/// Waits for the TLS handshake, enforcing its deadline, then installs the `hourglass/1`
/// pipeline with the peer's identity (taken from its verified certificate) and removes itself.
final class TLSHandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = NIOAny

  private let timeout: TimeAmount
  private let logger: Logger
  private let install: (ChannelHandlerContext, PeerIdentity?) throws -> Void
  /// Told why the handshake failed, before the connection closes (a client reports it).
  private let failed: ((any Error) -> Void)?
  private var timer: Scheduled<Void>?
  private var done = false

  init(
    timeout: TimeAmount, logger: Logger, failed: ((any Error) -> Void)? = nil,
    install: @escaping (ChannelHandlerContext, PeerIdentity?) throws -> Void
  ) {
    self.timeout = timeout
    self.logger = logger
    self.failed = failed
    self.install = install
  }

  func handlerAdded(context: ChannelHandlerContext) {
    timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
      guard let self, !self.done else { return }
      self.logger.info(
        "closing connection: TLS handshake did not finish in time", metadata: ["hourglass.peer": "\(context.channel.remoteAddress.map { "\($0)" } ?? "-")"])
      self.failed?(TLSHandshakeTimedOut(timeout: self.timeout))
      context.close(promise: nil)
    }
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    timer?.cancel()
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    guard case TLSUserEvent.handshakeCompleted(let negotiated) = event, !done else {
      context.fireUserInboundEventTriggered(event)
      return
    }
    done = true
    timer?.cancel()
    guard negotiated == TLSCredentials.alpnProtocol else {
      logger.info("closing connection: peer did not negotiate ALPN hourglass/1", metadata: ["hourglass.alpn": "\(negotiated ?? "none")"])
      failed?(ALPNNotNegotiated(negotiated: negotiated))
      context.close(promise: nil)
      return
    }
    do {
      var peer: PeerIdentity?
      if let certificate = try context.pipeline.syncOperations.nioSSL_peerCertificate() {
        let identity = try CertificateIdentity(derEncoded: try certificate.toDERBytes())
        peer = PeerIdentity(name: identity.name, role: identity.role?.rawValue ?? "unknown")
      }
      try install(context, peer)
      context.fireUserInboundEventTriggered(event)
      context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    } catch {
      logger.info("closing connection: cannot read the peer's identity", metadata: ["hourglass.error": "\(error)"])
      context.close(promise: nil)
    }
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    if !done {
      logger.debug("TLS handshake failed", metadata: ["hourglass.error": "\(error)"])
      failed?(error)
      context.close(promise: nil)
    } else {
      context.fireErrorCaught(error)
    }
  }
}

@available(*, unavailable)
extension TLSHandshakeHandler: Sendable {}

/// The TLS handshake did not finish within its time limit.
struct TLSHandshakeTimedOut: Error, CustomStringConvertible {
  let timeout: TimeAmount
  var description: String { "the TLS handshake did not finish within \(timeout)" }
}

/// The peer finished the TLS handshake without agreeing on `hourglass/1`.
struct ALPNNotNegotiated: Error, CustomStringConvertible {
  let negotiated: String?
  var description: String { "the server did not negotiate ALPN hourglass/1 (it chose \(negotiated ?? "none"))" }
}
