// Java's PKIX CertPathBuilder (the SUN provider's backtracking forward builder)
// judging a batch of served chains.
//
// Reads on stdin one case per line: "AT<TAB>CHAIN<TAB>STORE", AT in UNIX
// seconds, CHAIN and STORE each base64 DER certificates joined by commas
// (chain as served: the server's own certificate first). Writes one line per
// case: "ok<TAB>path" or "fail<TAB>reason". Revocation checking is off: no
// CRL or OCSP exists for test certificates.
import java.io.BufferedReader;
import java.io.ByteArrayInputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.security.cert.CertPathBuilder;
import java.security.cert.CertStore;
import java.security.cert.CertificateFactory;
import java.security.cert.CollectionCertStoreParameters;
import java.security.cert.PKIXBuilderParameters;
import java.security.cert.PKIXCertPathBuilderResult;
import java.security.cert.TrustAnchor;
import java.security.cert.X509CertSelector;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Date;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

public class Verify {
    static final CertificateFactory FACTORY;

    static {
        try {
            FACTORY = CertificateFactory.getInstance("X.509");
        } catch (Exception e) {
            throw new RuntimeException(e);
        }
    }

    static List<X509Certificate> parse(String field) throws Exception {
        List<X509Certificate> certs = new ArrayList<>();
        for (String part : field.split(",")) {
            if (!part.isEmpty()) {
                byte[] der = Base64.getDecoder().decode(part);
                certs.add((X509Certificate) FACTORY.generateCertificate(new ByteArrayInputStream(der)));
            }
        }
        return certs;
    }

    static String judge(String line) {
        try {
            String[] fields = line.split("\t", -1);
            Date at = new Date(Long.parseLong(fields[0]) * 1000L);
            List<X509Certificate> chain = parse(fields[1]);
            Set<TrustAnchor> anchors = new HashSet<>();
            for (X509Certificate root : parse(fields[2])) {
                anchors.add(new TrustAnchor(root, null));
            }
            X509CertSelector target = new X509CertSelector();
            target.setCertificate(chain.get(0));
            PKIXBuilderParameters parameters = new PKIXBuilderParameters(anchors, target);
            parameters.setDate(at);
            parameters.setRevocationEnabled(false);
            parameters.addCertStore(
                CertStore.getInstance("Collection", new CollectionCertStoreParameters(chain)));
            PKIXCertPathBuilderResult result =
                (PKIXCertPathBuilderResult) CertPathBuilder.getInstance("PKIX").build(parameters);
            StringBuilder path = new StringBuilder();
            for (java.security.cert.Certificate cert : result.getCertPath().getCertificates()) {
                path.append(((X509Certificate) cert).getSubjectX500Principal().getName()).append(" <- ");
            }
            path.append(result.getTrustAnchor().getTrustedCert().getSubjectX500Principal().getName());
            return "ok\t" + path;
        } catch (Exception e) {
            return "fail\t" + String.valueOf(e.getMessage()).replace('\t', ' ').replace('\n', ' ');
        }
    }

    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.US_ASCII));
        StringBuilder out = new StringBuilder();
        String line;
        while ((line = in.readLine()) != null) {
            if (!line.isEmpty()) {
                out.append(judge(line)).append('\n');
            }
        }
        System.out.print(out);
    }
}
