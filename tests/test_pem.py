"""Reading chain files: what is tolerated, what is refused, and how it is said."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chainwatch.errors import InputError
from chainwatch.x509.pem import MAX_CHAIN_CERTS, parse_certificates, read_bundle, read_chain
from tests.conftest import DEBIAN12_STORE, VECTORS
from tests.pki import CA, key_pem, pem

CHAIN = (VECTORS / "chains" / "le-r3-dstcross-demo-cosmian-app-2022.pem").read_bytes()


def test_reads_certificates_in_file_order() -> None:
    certs = parse_certificates(CHAIN, "fullchain.pem")
    assert [c.short_subject for c in certs] == ["demo.cosmian.app", "R3", "ISRG Root X1"]


def test_tolerates_crlf_blank_lines_and_text_between_blocks() -> None:
    noisy = b"Certificate:\r\n    Data: ...\r\n\r\n" + CHAIN.replace(b"\n", b"\r\n").replace(
        b"-----END CERTIFICATE-----", b"-----END CERTIFICATE-----\r\n\r\nsubject=CN = R3\r\n"
    )
    assert parse_certificates(noisy, "x") == parse_certificates(CHAIN, "x")


def test_ignores_other_blocks_such_as_dh_parameters() -> None:
    extra = b"-----BEGIN DH PARAMETERS-----\nMAgCAQ0CAQI=\n-----END DH PARAMETERS-----\n"
    assert len(parse_certificates(CHAIN + extra, "x")) == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "x: file is empty"),
        (b"\n \r\n", "x: file is empty"),
        (b"hello\n", "x: contains no certificate"),
        (b"-----BEGIN CERTIFICATE-----\nMIIB\n", "x: a -----BEGIN line has no matching -----END line"),
        (b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "x: certificate 1 is not valid base64"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "x: certificate 1 is not valid DER X.509"),
        (
            b"-----BEGIN PKCS7-----\nAAAA\n-----END PKCS7-----\n",
            "x: is a PKCS#7 bundle; convert it with 'openssl pkcs7",
        ),
        (
            b"-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END CERTIFICATE-----\n",
            "x: certificate 1 has PEM headers",
        ),
    ],
)
def test_refuses_broken_files_with_one_line_naming_the_file(data: bytes, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_certificates(data, "x")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_der_certificate_gets_a_conversion_hint() -> None:
    der = base64.b64decode(b"".join(CHAIN.split(b"-----")[2].split()))
    with pytest.raises(InputError, match=r"is DER, not PEM; convert it with 'openssl x509 -inform der"):
        parse_certificates(der, "x")


def test_der_pkcs7_gets_a_conversion_hint() -> None:
    # ContentInfo { signedData OID, ... }: enough of a real file's head.
    der = bytes.fromhex("3080") + bytes.fromhex("06092a864886f70d010702") + b"\xa0\x80" + b"\x00" * 8
    with pytest.raises(InputError, match="is a DER PKCS#7 bundle"):
        parse_certificates(der, "x")


def test_private_key_in_a_chain_file_is_refused_and_never_printed() -> None:
    key = key_pem(CA.root("r").key)
    with pytest.raises(InputError) as caught:
        parse_certificates(CHAIN + key, "fullchain.pem")
    message = str(caught.value)
    assert message.startswith("fullchain.pem: contains a private key")
    body = key.split(b"\n")[1].decode()
    assert body not in message


def test_more_than_the_limit_of_certificates_is_refused() -> None:
    one = pem(CA.root("r").cert)
    with pytest.raises(InputError, match=f"more than {MAX_CHAIN_CERTS} certificates"):
        parse_certificates(one * (MAX_CHAIN_CERTS + 1), "x")
    assert len(parse_certificates(one * MAX_CHAIN_CERTS, "x")) == MAX_CHAIN_CERTS


def test_file_larger_than_one_mib_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.pem"
    big.write_bytes(CHAIN + b"#" * (1 << 20))
    with pytest.raises(InputError, match="larger than 1 MiB"):
        read_chain(big)


def test_missing_file_and_directory_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"^{tmp_path}/nope.pem: no such file$"):
        read_chain(tmp_path / "nope.pem")
    with pytest.raises(InputError, match=f"^{tmp_path}: is a directory, not a file$"):
        read_chain(tmp_path)


def test_bundles_may_hold_more_than_a_chains_limit() -> None:
    assert len(read_bundle(DEBIAN12_STORE)) == 142 > MAX_CHAIN_CERTS


_pem_like = st.one_of(
    st.binary(max_size=400),
    st.builds(
        lambda head, body, tail: (
            head + b"-----BEGIN CERTIFICATE-----\n" + body + b"\n-----END CERTIFICATE-----\n" + tail
        ),
        st.binary(max_size=40),
        st.one_of(st.binary(max_size=300), st.builds(base64.b64encode, st.binary(max_size=300))),
        st.binary(max_size=40),
    ),
    st.builds(
        lambda cut, junk: CHAIN[:cut] + junk + CHAIN[cut:],
        st.integers(0, len(CHAIN)),
        st.binary(max_size=8),
    ),
)


@settings(max_examples=400, deadline=None)
@given(_pem_like)
def test_fuzzed_input_raises_nothing_but_input_error(data: bytes) -> None:
    try:
        certs = parse_certificates(data, "fuzz.pem")
    except InputError as error:
        assert "\n" not in str(error)
    else:
        assert certs
