"""X.509 for Velocity/1 (spec section 10.4): ML-DSA CAs, leaf certificates whose subject key
is the server's static ML-KEM key, key files, and certificate validation against CA files,
a pinned fingerprint, trust on first use, or (explicitly) nothing.

``cryptography`` builds, signs and verifies certificates. OpenSSL has no ML-KEM-512 key type,
so for the light profile the leaf is built around a placeholder key and its
subjectPublicKeyInfo is replaced (pyasn1) before the CA signs it. SPKIs and ML-KEM key files
are read and written with pyasn1 for every parameter set: one way for all three.
"""

from __future__ import annotations

import base64
import datetime as dt
import errno
import hashlib
import ipaddress
import os
import shlex
import stat
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyasn1.codec.der import decoder, encoder
from pyasn1.error import PyAsn1Error
from pyasn1.type import univ
from pyasn1_modules import rfc5280, rfc5958

from velocity.core.errors import CertificateInvalid, UsageError
from velocity.core.hybrid import Profile
from velocity.core.kem import KemParams
from velocity.crypto.dsa import CryptographyDsa, DsaBackend

KEM_OIDS = {KemParams.ML_KEM_512: "2.16.840.1.101.3.4.4.1",
            KemParams.ML_KEM_768: "2.16.840.1.101.3.4.4.2",
            KemParams.ML_KEM_1024: "2.16.840.1.101.3.4.4.3"}
_PARAMS_BY_OID = {oid: params for params, oid in KEM_OIDS.items()}
CaKey = mldsa.MLDSA44PrivateKey | mldsa.MLDSA65PrivateKey | mldsa.MLDSA87PrivateKey
_CA_KEYS: dict[str, Any] = {"ML-DSA-44": mldsa.MLDSA44PrivateKey,
                            "ML-DSA-65": mldsa.MLDSA65PrivateKey,
                            "ML-DSA-87": mldsa.MLDSA87PrivateKey}
_DSA_OIDS = {"2.16.840.1.101.3.4.3.17": "ML-DSA-44", "2.16.840.1.101.3.4.3.18": "ML-DSA-65",
             "2.16.840.1.101.3.4.3.19": "ML-DSA-87"}
_OPENSSL_KEM: dict[KemParams, Any] = {KemParams.ML_KEM_768: mlkem.MLKEM768PublicKey,
                KemParams.ML_KEM_1024: mlkem.MLKEM1024PublicKey}


def fingerprint(der: bytes) -> str:
    """VEL-CERT-006: SHA-256 of the DER certificate, hex."""
    return hashlib.sha256(der).hexdigest()


def pem_encode(label: str, der: bytes) -> bytes:
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode()


def pem_decode(label: str, pem: bytes) -> bytes:
    text = pem.decode("ascii", errors="replace")
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    if begin not in text or end not in text:
        raise ValueError(f"no {label} PEM block found")
    body = text.split(begin, 1)[1].split(end, 1)[0]
    return base64.b64decode("".join(body.split()), validate=True)


# --- key directories and files (VEL-CERT-004, VEL-CERT-007 .. VEL-CERT-009) ----------------


def refuse_shared_directory(directory: Path) -> None:
    """Raise UsageError if ``directory`` exists and someone other than this user (or root)
    could put files in it: the keys read from there, or written there, would not be ours."""
    try:
        status = directory.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UsageError(f"cannot use {directory}: {load_problem(exc)}") from None
    if not stat.S_ISDIR(status.st_mode):
        raise UsageError(f"{directory} is not a directory; move it away or choose another")
    if status.st_uid not in (os.geteuid(), 0):
        raise UsageError(f"{directory} belongs to another user (uid {status.st_uid}); use a "
                         "directory of your own for keys")
    if status.st_mode & 0o022:
        raise UsageError(f"{directory} is writable by other users; make it private with "
                         f"'chmod 700 {shlex.quote(str(directory))}'")


def read_secret_file(path: Path) -> bytes:
    """A secret's bytes, refused (UsageError) if the path is a symbolic link, not a regular
    file, not this user's (or root's), or readable or writable by other users
    (VEL-CERT-004): a key others could read or swap is not a secret."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(f"{path} is a symbolic link; a key file must be the file "
                             "itself") from None
        raise
    with os.fdopen(fd, "rb") as file:
        status = os.fstat(file.fileno())
        quoted = shlex.quote(str(path))
        if not stat.S_ISREG(status.st_mode) or status.st_uid not in (os.geteuid(), 0):
            raise UsageError(f"{path} is not a regular file of this user; a key file is")
        if status.st_mode & 0o077:
            raise UsageError(f"{path} is open to other users (mode "
                             f"{stat.S_IMODE(status.st_mode):04o}); make it private with "
                             f"'chmod 600 {quoted}'")
        return file.read()


def make_private_directory(directory: Path) -> None:
    """Create ``directory`` and its missing parents with mode 0700 whatever the umask, and
    refuse it if other users could write to it (``refuse_shared_directory``)."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    for made in reversed(missing):
        try:
            made.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made meanwhile by someone else: checked below
        except OSError as exc:
            raise UsageError(f"cannot create {made}: {load_problem(exc)}") from None
        os.chmod(made, 0o700)
    refuse_shared_directory(directory)


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` with exactly ``mode`` through a new file in the same directory
    (O_EXCL | O_NOFOLLOW) renamed over it: a symlink planted at ``path`` is replaced, never
    followed, and a reader sees the old or the new file, never half of one."""
    make_private_directory(path.parent)
    temporary = None
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {load_problem(exc)}") from None


def write_secret_file(path: Path, data: bytes) -> None:
    """Write a key file readable by its owner only (VEL-CERT-004)."""
    _write_file(path, data, 0o600)


def write_public_file(path: Path, data: bytes) -> None:
    """Write a certificate (or other file that is not secret) with mode 0644."""
    _write_file(path, data, 0o644)


# --- ML-KEM keys in SPKI and PKCS#8 -----------------------------------------------------


def kem_spki(params: KemParams, encapsulation_key: bytes) -> bytes:
    spki = rfc5280.SubjectPublicKeyInfo()
    spki["algorithm"]["algorithm"] = univ.ObjectIdentifier(KEM_OIDS[params])
    spki["subjectPublicKey"] = univ.BitString.fromOctetString(encapsulation_key)
    return bytes(encoder.encode(spki))


def certificate_kem_key(certificate: x509.Certificate) -> tuple[KemParams, bytes]:
    """The ML-KEM parameter set and encapsulation key a leaf certifies."""
    tbs, _ = decoder.decode(certificate.tbs_certificate_bytes, asn1Spec=rfc5280.TBSCertificate())
    oid = str(tbs["subjectPublicKeyInfo"]["algorithm"]["algorithm"])
    if oid not in _PARAMS_BY_OID:
        raise CertificateInvalid(f"leaf key algorithm {oid} is not ML-KEM", field="CERTIFICATE")
    return _PARAMS_BY_OID[oid], tbs["subjectPublicKeyInfo"]["subjectPublicKey"].asOctets()


def kem_private_key_pem(params: KemParams, seed: bytes) -> bytes:
    """PKCS#8 in the seed form of draft-ietf-lamps-kyber-certificates: [0] d || z."""
    info = rfc5958.OneAsymmetricKey()
    info["version"] = 0
    info["privateKeyAlgorithm"]["algorithm"] = univ.ObjectIdentifier(KEM_OIDS[params])
    info["privateKey"] = b"\x80" + bytes([len(seed)]) + seed
    return pem_encode("PRIVATE KEY", bytes(encoder.encode(info)))


def load_kem_private_key_pem(pem: bytes) -> tuple[KemParams, bytes]:
    """(parameter set, 64-byte seed) from a key file written by ``kem_private_key_pem``."""
    try:
        info, _ = decoder.decode(pem_decode("PRIVATE KEY", pem),
                                 asn1Spec=rfc5958.OneAsymmetricKey())
        oid = str(info["privateKeyAlgorithm"]["algorithm"])
        inner = info["privateKey"].asOctets()
    except (PyAsn1Error, ValueError) as exc:
        raise UsageError(f"not an ML-KEM private key file: {exc}") from None
    if oid not in _PARAMS_BY_OID or inner[:2] != b"\x80\x40" or len(inner) != 66:
        raise UsageError("not an ML-KEM private key in seed form")
    return _PARAMS_BY_OID[oid], inner[2:]


# --- CA and leaf certificates -------------------------------------------------------------


def ca_key_from_seed(profile: Profile, seed: bytes) -> CaKey:
    key: CaKey = _CA_KEYS[profile.signature].from_seed_bytes(seed)
    return key


def ca_key_pem(key: CaKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_ca_key_pem(pem: bytes) -> CaKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, CaKey):
        raise UsageError("the CA key file does not hold an ML-DSA key")
    return key


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def create_ca(key: CaKey, *, common_name: str, not_before: dt.datetime,
              days: int = 3650) -> x509.Certificate:
    name = _name(common_name)
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(not_before)
            .not_valid_after(not_before + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, None))


def alt_names(names: Sequence[str]) -> list[x509.GeneralName]:
    """subjectAltName entries: IP addresses where ``names`` parse as one, DNS names else."""
    result: list[x509.GeneralName] = []
    for name in names:
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            result.append(x509.DNSName(name))
    return result


def issue_leaf(ca_key: CaKey, ca_cert: x509.Certificate, params: KemParams,
               encapsulation_key: bytes, *, names: Sequence[str], not_before: dt.datetime,
               days: int = 90, serial: int = 2) -> x509.Certificate:
    """A leaf for the static ML-KEM key: keyEncipherment only, CA=false, SANs (VEL-CERT-001)."""
    public: mlkem.MLKEM768PublicKey | mlkem.MLKEM1024PublicKey
    if params in _OPENSSL_KEM:
        public = _OPENSSL_KEM[params].from_public_bytes(encapsulation_key)
    else:  # a placeholder whose SPKI is replaced below
        public = mlkem.MLKEM768PrivateKey.generate().public_key()
    builder = (x509.CertificateBuilder()
               .subject_name(_name(names[0] if names else "velocity server"))
               .issuer_name(ca_cert.subject).public_key(public).serial_number(serial)
               .not_valid_before(not_before).not_valid_after(not_before + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=False, content_commitment=False, key_encipherment=True,
                   data_encipherment=False, key_agreement=False, key_cert_sign=False,
                   crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                              critical=False)
               .add_extension(x509.SubjectAlternativeName(alt_names(names)), critical=False))
    certificate = builder.sign(ca_key, None)
    if params in _OPENSSL_KEM:
        return certificate
    return _replace_spki(certificate, ca_key, kem_spki(params, encapsulation_key))


def _replace_spki(certificate: x509.Certificate, ca_key: CaKey, spki_der: bytes
                  ) -> x509.Certificate:
    """Swap the subject key of a signed certificate and sign the new TBS again."""
    tbs, _ = decoder.decode(certificate.tbs_certificate_bytes, asn1Spec=rfc5280.TBSCertificate())
    spki, _ = decoder.decode(spki_der, asn1Spec=rfc5280.SubjectPublicKeyInfo())
    tbs["subjectPublicKeyInfo"] = spki
    tbs_der = bytes(encoder.encode(tbs))
    outer, _ = decoder.decode(certificate.public_bytes(serialization.Encoding.DER),
                              asn1Spec=rfc5280.Certificate())
    outer["tbsCertificate"] = tbs
    outer["signature"] = univ.BitString.fromOctetString(ca_key.sign(tbs_der))
    return x509.load_der_x509_certificate(bytes(encoder.encode(outer)))


# --- validation -----------------------------------------------------------------------------


def load_problem(exc: OSError | ValueError) -> str:
    """Why a key or certificate file did not load, in words for the user."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return "not the expected PEM content"


def load_ca_file(path: Path) -> list[x509.Certificate]:
    """Trust anchors from a PEM file of one or more CA certificates."""
    try:
        anchors = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read CA certificates from {path}: {load_problem(exc)}"
                         ) from None
    if not all(_is_ca(cert) for cert in anchors):
        raise UsageError(f"{path} holds a certificate that is not a CA")
    return anchors


class TofuStore(Protocol):
    def pinned(self, name: str) -> str | None: ...

    def pin(self, name: str, fingerprint: str) -> None: ...

    def clearing(self, name: str) -> str:
        """Where the pin for ``name`` is kept and how the user clears it (VEL-CERT-010)."""
        ...


def _fail(reason: str) -> CertificateInvalid:
    return CertificateInvalid(reason, field="CERTIFICATE")


def _check_validity(cert: x509.Certificate, now: dt.datetime, what: str) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise _fail(f"{what} is outside its validity period")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _name_matches(cert: x509.Certificate, server_name: str) -> bool:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        address = ipaddress.ip_address(server_name)
        return address in sans.get_values_for_type(x509.IPAddress)
    except ValueError:
        wanted = server_name.lower().rstrip(".")
        for dns in sans.get_values_for_type(x509.DNSName):
            pattern = dns.lower()
            if pattern == wanted or (pattern.startswith("*.") and "." in wanted
                                     and wanted.split(".", 1)[1] == pattern[2:]):
                return True
        return False


class X509Verifier:
    """``CertificateVerifier`` for the client (VEL-CERT-002, VEL-CERT-003). Exactly one trust
    mode: ``anchors`` (CA certificates), ``pin`` (leaf SHA-256), ``tofu`` or ``insecure``."""

    def __init__(self, *, anchors: Sequence[x509.Certificate] = (), pin: str | None = None,
                 tofu: TofuStore | None = None, insecure: bool = False,
                 clock: Callable[[], dt.datetime], dsa: DsaBackend | None = None) -> None:
        modes = sum((bool(anchors), pin is not None, tofu is not None, insecure))
        if modes != 1:
            raise UsageError("choose exactly one of a CA file, a pinned fingerprint, "
                             "trust on first use, or insecure mode")
        self._anchors = tuple(anchors)
        self._pin = pin.lower().replace(":", "") if pin else None
        self._tofu = tofu
        self.insecure = insecure
        self._clock = clock
        self._dsa = dsa or CryptographyDsa()

    def verify(self, chain: Sequence[bytes], profile: Profile, server_name: str | None) -> bytes:
        try:
            certs = [x509.load_der_x509_certificate(der) for der in chain]
        except ValueError as exc:
            raise _fail(f"undecodable certificate: {exc}") from None
        leaf = certs[0]
        params, encapsulation_key = certificate_kem_key(leaf)
        if params != profile.kem:
            raise _fail(f"leaf key is {params.value}, the {profile.name} profile needs "
                        f"{profile.kem.value}")
        if self.insecure:
            return encapsulation_key
        now = self._clock()
        _check_validity(leaf, now, "the leaf certificate")
        if _is_ca(leaf):
            raise _fail("the leaf certificate is a CA")
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.key_encipherment:
            raise _fail("the leaf key is not allowed for key encipherment")
        if server_name and not _name_matches(leaf, server_name):
            raise _fail(f"the certificate is not valid for {server_name}")
        digest = fingerprint(chain[0])
        if self._pin is not None:
            if digest != self._pin:
                raise _fail(f"leaf fingerprint {digest} does not match the pinned one")
        elif self._tofu is not None:
            self._trust_on_first_use(server_name or "", digest)
        else:
            self._verify_chain(certs, now)
        return encapsulation_key

    def _trust_on_first_use(self, name: str, digest: str) -> None:
        assert self._tofu is not None
        known = self._tofu.pinned(name)
        if known is None:
            try:
                self._tofu.pin(name, digest)
            except (UsageError, OSError) as exc:
                raise _fail(f"cannot keep the pin for {name}: {exc}") from None
        elif known != digest:
            raise _fail(f"{name} presented a different key than on first use "
                        f"({digest} instead of {known}); {self._tofu.clearing(name)}")

    def _verify_chain(self, certs: list[x509.Certificate], now: dt.datetime) -> None:
        current = certs[0]
        for issuer in certs[1:]:
            self._signed_by(current, issuer)
            if not _is_ca(issuer):
                raise _fail("an intermediate certificate is not a CA")
            _check_validity(issuer, now, "an intermediate certificate")
            current = issuer
        failures = []
        for anchor in (a for a in self._anchors if a.subject == current.issuer):
            try:  # several anchors may share a subject name; any one may be the issuer
                self._signed_by(current, anchor)
                _check_validity(anchor, now, "the CA certificate")
            except CertificateInvalid as exc:
                failures.append(exc.reason)
                continue
            return
        raise _fail("the chain does not lead to a trusted CA"
                    + (f" ({'; '.join(failures)})" if failures else ""))

    def _signed_by(self, cert: x509.Certificate, issuer: x509.Certificate) -> None:
        """The issuer's ML-DSA signature over the TBS, on the configured backend."""
        where = issuer.subject.rfc4514_string()
        parameter_set = _DSA_OIDS.get(cert.signature_algorithm_oid.dotted_string)
        if cert.issuer != issuer.subject or parameter_set is None:
            raise _fail(f"not an ML-DSA signature by {where}")
        try:
            public = issuer.public_key().public_bytes_raw()  # type: ignore[union-attr]
        except (ValueError, AttributeError) as exc:
            raise _fail(f"unusable key in {where}: {exc}") from None
        if not self._dsa.verify(parameter_set, public, cert.tbs_certificate_bytes,
                                cert.signature):
            raise _fail(f"signature check against {where} failed ({self._dsa.name})")
