/* mod_rmsync: certificate credentials (the contract is in rmsync_jwt.h).
 *
 * Runs in the httpd parent at configtest (rmsync_jwt_read_credentials: the key file is read
 * while still root, so it may stay 0600 root) and in the sync runner (rmsync_jwt_key_load once
 * per Graph client, rmsync_jwt_client_assertion per token request, by the one thread that
 * refreshes the token). No httpd headers: OpenSSL's EVP API, APR, cJSON.
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <apr_strings.h>
#include <apr_file_io.h>
#include <apr_encode.h>
#include <apr_general.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <cjson/cJSON.h>

#include "rmsync.h"
#include "rmsync_jwt.h"

struct rmsync_jwt_key_t {
    X509 *cert;
    EVP_PKEY *pkey;
    apr_time_t not_after;
    const char *thumbprint;     /* SHA-1, hex */
    const char *x5t_s256;       /* base64url SHA-256 */
};

static apr_status_t key_cleanup(void *data)
{
    rmsync_jwt_key_t *k = data;
    EVP_PKEY_free(k->pkey);
    X509_free(k->cert);
    k->pkey = NULL;
    k->cert = NULL;
    return APR_SUCCESS;
}

/* Never prompt on a terminal for a passphrase (httpd's parent may have one). */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf; (void)size; (void)rwflag; (void)u;
    return -1;
}

/* The first OpenSSL error of this thread as text (and the queue cleared). */
static const char *ssl_error(apr_pool_t *p)
{
    unsigned long e = ERR_get_error();
    char buf[256];
    ERR_clear_error();
    if (!e) {
        return "no detail";
    }
    ERR_error_string_n(e, buf, sizeof(buf));
    return apr_pstrdup(p, buf);
}

static const char *b64url(apr_pool_t *p, const unsigned char *d, apr_size_t n)
{
    return apr_pencode_base64_binary(p, d, (apr_ssize_t)n, APR_ENCODE_BASE64URL, NULL);
}

const char *rmsync_jwt_key_load(apr_pool_t *p, const char *cert_pem, const char *key_pem,
                                rmsync_jwt_key_t **out)
{
    rmsync_jwt_key_t *k = apr_pcalloc(p, sizeof(*k));
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0, i;
    char *hex;
    BIO *b;
    struct tm tm;

    *out = NULL;
    ERR_clear_error();
    apr_pool_cleanup_register(p, k, key_cleanup, apr_pool_cleanup_null);
    b = BIO_new_mem_buf(cert_pem, -1);
    k->cert = b ? PEM_read_bio_X509(b, NULL, no_passphrase, NULL) : NULL;
    BIO_free(b);
    if (!k->cert) {
        return apr_psprintf(p, "not a PEM certificate (%s)", ssl_error(p));
    }
    if (strstr(key_pem, "ENCRYPTED")) {
        return "the private key is protected by a passphrase, which the module cannot ask for "
               "(store it unencrypted, mode 0600: openssl pkey -in old.pem -out key.pem)";
    }
    b = BIO_new_mem_buf(key_pem, -1);
    k->pkey = b ? PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL) : NULL;
    BIO_free(b);
    if (!k->pkey) {
        return apr_psprintf(p, "not a PEM private key (%s)", ssl_error(p));
    }
    if (EVP_PKEY_get_base_id(k->pkey) != EVP_PKEY_RSA) {
        return "the key is not an RSA key (Microsoft Entra ID accepts RSA certificates only)";
    }
    if (EVP_PKEY_get_bits(k->pkey) < 2048) {
        return apr_psprintf(p, "the RSA key has %d bits; Microsoft Entra ID needs at least 2048",
                            EVP_PKEY_get_bits(k->pkey));
    }
    if (X509_check_private_key(k->cert, k->pkey) != 1) {
        ERR_clear_error();
        return "the private key does not belong to the certificate";
    }
    if (ASN1_TIME_to_tm(X509_get0_notAfter(k->cert), &tm) != 1) {
        return "the certificate's notAfter cannot be read";
    }
    k->not_after = apr_time_from_sec((apr_time_t)timegm(&tm));
    if (X509_digest(k->cert, EVP_sha1(), md, &mdlen) != 1) {
        return apr_psprintf(p, "certificate thumbprint (%s)", ssl_error(p));
    }
    hex = apr_palloc(p, mdlen * 2 + 1);
    for (i = 0; i < mdlen; i++) {
        apr_snprintf(hex + i * 2, 3, "%02X", md[i]);
    }
    k->thumbprint = hex;
    if (X509_digest(k->cert, EVP_sha256(), md, &mdlen) != 1) {
        return apr_psprintf(p, "certificate thumbprint (%s)", ssl_error(p));
    }
    k->x5t_s256 = b64url(p, md, mdlen);
    *out = k;
    return NULL;
}

apr_time_t rmsync_jwt_key_not_after(const rmsync_jwt_key_t *k)
{
    return k->not_after;
}

const char *rmsync_jwt_key_thumbprint(const rmsync_jwt_key_t *k)
{
    return k->thumbprint;
}

const char *rmsync_jwt_key_x5t_s256(const rmsync_jwt_key_t *k)
{
    return k->x5t_s256;
}

/* A PEM file of at most RMSYNC_JWT_MAX_PEM bytes as a string. */
static const char *read_pem(apr_pool_t *p, const char *path, const char *what,
                            const char **out)
{
    apr_file_t *f;
    apr_status_t rv;
    apr_size_t len = RMSYNC_JWT_MAX_PEM + 1;
    char ebuf[128], *data;

    rv = apr_file_open(&f, path, APR_FOPEN_READ, 0, p);
    if (rv != APR_SUCCESS) {
        return apr_psprintf(p, "cannot read the %s '%s': %s", what, path,
                            apr_strerror(rv, ebuf, sizeof(ebuf)));
    }
    data = apr_palloc(p, len + 1);
    rv = apr_file_read_full(f, data, len, &len);
    apr_file_close(f);
    if (rv != APR_SUCCESS && rv != APR_EOF) {
        return apr_psprintf(p, "cannot read the %s '%s': %s", what, path,
                            apr_strerror(rv, ebuf, sizeof(ebuf)));
    }
    if (len > RMSYNC_JWT_MAX_PEM) {
        return apr_psprintf(p, "the %s '%s' is larger than 64 KiB", what, path);
    }
    data[len] = '\0';
    if (strlen(data) != len || !strstr(data, "-----BEGIN ")) {
        return apr_psprintf(p, "the %s '%s' is not a PEM file", what, path);
    }
    *out = data;
    return NULL;
}

const char *rmsync_jwt_read_credentials(apr_pool_t *p, const char *cert_path,
                                        const char *key_path, const char **cert_pem,
                                        const char **key_pem)
{
    struct stat sb;
    const char *err, *cpem = NULL, *kpem = NULL;
    rmsync_jwt_key_t *k;
    apr_pool_t *tmp;

    if (stat(key_path, &sb) != 0) {
        return apr_psprintf(p, "cannot read the private key '%s': %s", key_path,
                            strerror(errno));
    }
    if (!S_ISREG(sb.st_mode)) {
        return apr_psprintf(p, "the private key '%s' is not a regular file", key_path);
    }
    if (sb.st_mode & 077) {
        return apr_psprintf(p, "permissions %04o for the private key '%s' are too open: it must "
                            "not be accessible by group or others (chmod 600; Apache reads it "
                            "as root at startup)", (unsigned)(sb.st_mode & 07777), key_path);
    }
    if ((err = read_pem(p, cert_path, "certificate", &cpem))
        || (err = read_pem(p, key_path, "private key", &kpem))) {
        return err;
    }
    /* Parse once now so that configtest reports a bad pair; the runner parses again. */
    if (apr_pool_create(&tmp, p) != APR_SUCCESS) {
        return "out of memory";
    }
    err = rmsync_jwt_key_load(tmp, cpem, kpem, &k);
    if (err) {
        err = apr_psprintf(p, "'%s' / '%s': %s", cert_path, key_path, err);
    }
    apr_pool_destroy(tmp);
    if (err) {
        return err;
    }
    *cert_pem = cpem;
    *key_pem = kpem;
    return NULL;
}

/* base64url of cJSON's compact rendering of o (freed here). */
static const char *json_part(apr_pool_t *p, cJSON *o)
{
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    const char *r = s ? b64url(p, (const unsigned char *)s, strlen(s)) : NULL;
    cJSON_free(s);
    cJSON_Delete(o);
    return r;
}

apr_status_t rmsync_jwt_client_assertion(apr_pool_t *p, const rmsync_jwt_key_t *k,
                                         rmsync_jwt_alg_e alg, const char *client_id,
                                         const char *audience, apr_time_t now,
                                         const char **out)
{
    unsigned char rnd[16], *sig = NULL;
    size_t siglen = 0;
    const char *hdr, *claims, *input;
    char jti[37];
    double t = (double)apr_time_sec(now);
    cJSON *h, *c;
    EVP_MD_CTX *md = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    apr_status_t rv;

    *out = NULL;
    if ((rv = apr_generate_random_bytes(rnd, sizeof(rnd))) != APR_SUCCESS) {
        return rv;
    }
    rnd[6] = (unsigned char)((rnd[6] & 0x0f) | 0x40);   /* a version 4 UUID */
    rnd[8] = (unsigned char)((rnd[8] & 0x3f) | 0x80);
    apr_snprintf(jti, sizeof(jti), "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
                 "%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5],
                 rnd[6], rnd[7], rnd[8], rnd[9], rnd[10], rnd[11], rnd[12], rnd[13], rnd[14],
                 rnd[15]);

    h = cJSON_CreateObject();
    if (h) {
        cJSON_AddStringToObject(h, "alg", alg == RMSYNC_JWT_RS256 ? "RS256" : "PS256");
        cJSON_AddStringToObject(h, "typ", "JWT");
        cJSON_AddStringToObject(h, "x5t#S256", k->x5t_s256);
    }
    c = cJSON_CreateObject();
    if (c) {
        cJSON_AddStringToObject(c, "aud", audience);
        cJSON_AddStringToObject(c, "iss", client_id);
        cJSON_AddStringToObject(c, "sub", client_id);
        cJSON_AddStringToObject(c, "jti", jti);
        cJSON_AddNumberToObject(c, "nbf", t);
        cJSON_AddNumberToObject(c, "iat", t);
        cJSON_AddNumberToObject(c, "exp", t + RMSYNC_JWT_LIFETIME_S);
    }
    hdr = json_part(p, h);
    claims = json_part(p, c);
    if (!hdr || !claims) {
        return APR_ENOMEM;
    }
    input = apr_pstrcat(p, hdr, ".", claims, NULL);

    ERR_clear_error();
    rv = APR_EGENERAL;
    md = EVP_MD_CTX_new();
    if (md && EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, k->pkey) == 1
        && (alg == RMSYNC_JWT_RS256
            || (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1
                && EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1))
        && EVP_DigestSign(md, NULL, &siglen, (const unsigned char *)input, strlen(input)) == 1
        && (sig = apr_palloc(p, siglen)) != NULL
        && EVP_DigestSign(md, sig, &siglen, (const unsigned char *)input, strlen(input)) == 1) {
        *out = apr_pstrcat(p, input, ".", b64url(p, sig, siglen), NULL);
        rv = APR_SUCCESS;
    }
    ERR_clear_error();
    EVP_MD_CTX_free(md);
    return rv;
}
