/* Unit tests: rmsync_jwt (certificate credentials): loading and checking a certificate and key,
 * the key file's permissions, and client assertions (header, claims, PS256/RS256 signatures
 * verified with the certificate's public key). Keys and certificates are made here with
 * OpenSSL, so the tests need no files. */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <apr_general.h>
#include <apr_strings.h>
#include <apr_encode.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <cjson/cJSON.h>
#include "rmsync_jwt.h"
#include "unit_main.h"

static apr_pool_t *pool;

static void setup(void)
{
    apr_pool_create(&pool, NULL);
}

static void teardown(void)
{
    apr_pool_destroy(pool);
}

static const char *bio_text(BIO *b)
{
    char *d = NULL;
    long n = BIO_get_mem_data(b, &d);
    const char *r = apr_pstrmemdup(pool, d, (apr_size_t)n);
    BIO_free(b);
    return r;
}

static EVP_PKEY *rsa_key(void)
{
    EVP_PKEY *k = EVP_RSA_gen(2048);
    ck_assert_ptr_nonnull(k);
    return k;
}

static const char *key_pem(EVP_PKEY *k, int encrypted)
{
    BIO *b = BIO_new(BIO_s_mem());
    ck_assert_int_eq(PEM_write_bio_PKCS8PrivateKey(b, k, encrypted ? EVP_aes_128_cbc() : NULL,
                                                   encrypted ? "pw" : NULL, encrypted ? 2 : 0,
                                                   NULL, NULL), 1);
    return bio_text(b);
}

/* A self-signed certificate for k valid from now + from_s to now + to_s. */
static const char *cert_pem(EVP_PKEY *k, long from_s, long to_s)
{
    X509 *x = X509_new();
    X509_NAME *n;
    BIO *b = BIO_new(BIO_s_mem());
    ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
    X509_gmtime_adj(X509_getm_notBefore(x), from_s);
    X509_gmtime_adj(X509_getm_notAfter(x), to_s);
    X509_set_pubkey(x, k);
    n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"rmsync-test", -1,
                               -1, 0);
    X509_set_issuer_name(x, n);
    ck_assert_int_gt(X509_sign(x, k, EVP_sha256()), 0);
    ck_assert_int_eq(PEM_write_bio_X509(b, x), 1);
    X509_free(x);
    return bio_text(b);
}

static const unsigned char *unb64(const char *s, apr_size_t *len)
{
    const unsigned char *d = apr_pdecode_base64_binary(pool, s, APR_ENCODE_STRING,
                                                       APR_ENCODE_BASE64URL, len);
    ck_assert_ptr_nonnull(d);
    return d;
}

static cJSON *part_json(const char *s, apr_size_t n)
{
    apr_size_t len;
    const unsigned char *d = unb64(apr_pstrmemdup(pool, s, n), &len);
    cJSON *j = cJSON_ParseWithLength((const char *)d, len);
    ck_assert_ptr_nonnull(j);
    return j;
}

static const char *jstr(cJSON *o, const char *k)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    ck_assert_msg(cJSON_IsString(v), "%s is not a string", k);
    return v->valuestring;
}

static double jnum(cJSON *o, const char *k)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    ck_assert_msg(cJSON_IsNumber(v), "%s is not a number", k);
    return v->valuedouble;
}

/* Verify a JWT's signature with pub, as the token endpoint does. */
static int verify(EVP_PKEY *pub, const char *jwt, int pss)
{
    const char *dot = strrchr(jwt, '.');
    apr_size_t slen;
    const unsigned char *sig = unb64(dot + 1, &slen);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int ok = EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, pub) == 1;
    if (ok && pss) {
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1
             && EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1;
    }
    ok = ok && EVP_DigestVerify(md, sig, slen, (const unsigned char *)jwt,
                                (size_t)(dot - jwt)) == 1;
    EVP_MD_CTX_free(md);
    return ok;
}

static void check_assertion(rmsync_jwt_alg_e alg)
{
    EVP_PKEY *k = rsa_key();
    const char *cpem = cert_pem(k, 0, 86400), *jwt = NULL, *d1, *d2;
    const char *aud = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token";
    rmsync_jwt_key_t *key = NULL;
    apr_time_t now = apr_time_from_sec(1700000000);
    cJSON *h, *c;

    ck_assert_ptr_null(rmsync_jwt_key_load(pool, cpem, key_pem(k, 0), &key));
    ck_assert_int_eq(rmsync_jwt_client_assertion(pool, key, alg, "11111111-2222-3333-4444-5555",
                                                 aud, now, &jwt), APR_SUCCESS);
    d1 = strchr(jwt, '.');
    ck_assert_ptr_nonnull(d1);
    d2 = strchr(d1 + 1, '.');
    ck_assert_ptr_nonnull(d2);
    ck_assert_ptr_null(strchr(d2 + 1, '.'));
    ck_assert_ptr_null(strpbrk(jwt, "+/= "));     /* base64url without padding */

    h = part_json(jwt, (apr_size_t)(d1 - jwt));
    ck_assert_str_eq(jstr(h, "alg"), alg == RMSYNC_JWT_PS256 ? "PS256" : "RS256");
    ck_assert_str_eq(jstr(h, "typ"), "JWT");
    ck_assert_str_eq(jstr(h, "x5t#S256"), rmsync_jwt_key_x5t_s256(key));
    c = part_json(d1 + 1, (apr_size_t)(d2 - d1 - 1));
    ck_assert_str_eq(jstr(c, "aud"), aud);
    ck_assert_str_eq(jstr(c, "iss"), "11111111-2222-3333-4444-5555");
    ck_assert_str_eq(jstr(c, "sub"), "11111111-2222-3333-4444-5555");
    ck_assert_int_eq(strlen(jstr(c, "jti")), 36);
    ck_assert(jnum(c, "nbf") == 1700000000.0);
    ck_assert(jnum(c, "iat") == 1700000000.0);
    ck_assert(jnum(c, "exp") == 1700000000.0 + RMSYNC_JWT_LIFETIME_S);
    cJSON_Delete(h);
    cJSON_Delete(c);

    ck_assert(verify(k, jwt, alg == RMSYNC_JWT_PS256));
    ck_assert(!verify(k, jwt, alg != RMSYNC_JWT_PS256));   /* the other padding fails */
    EVP_PKEY_free(k);
}

START_TEST(test_assertion_ps256)
{
    check_assertion(RMSYNC_JWT_PS256);
}
END_TEST

START_TEST(test_assertion_rs256)
{
    check_assertion(RMSYNC_JWT_RS256);
}
END_TEST

START_TEST(test_jti_unique_and_signature_bound)
{
    EVP_PKEY *k = rsa_key(), *other = rsa_key();
    rmsync_jwt_key_t *key = NULL;
    const char *a = NULL, *b = NULL, *ja, *jb;
    apr_time_t now = apr_time_now();
    ck_assert_ptr_null(rmsync_jwt_key_load(pool, cert_pem(k, 0, 3600), key_pem(k, 0), &key));
    ck_assert_int_eq(rmsync_jwt_client_assertion(pool, key, RMSYNC_JWT_PS256, "c", "https://a/t",
                                                 now, &a), APR_SUCCESS);
    ck_assert_int_eq(rmsync_jwt_client_assertion(pool, key, RMSYNC_JWT_PS256, "c", "https://a/t",
                                                 now, &b), APR_SUCCESS);
    ck_assert_str_ne(a, b);
    ja = strstr(a, ".");
    jb = strstr(b, ".");
    ck_assert(strncmp(ja, jb, (apr_size_t)(strrchr(a, '.') - ja)) != 0);   /* claims differ */
    ck_assert(verify(k, a, 1));
    ck_assert(!verify(other, a, 1));
    EVP_PKEY_free(k);
    EVP_PKEY_free(other);
}
END_TEST

START_TEST(test_load_details_and_errors)
{
    EVP_PKEY *k = rsa_key(), *other = rsa_key(), *ec = EVP_EC_gen("P-256");
    rmsync_jwt_key_t *key = NULL;
    const char *cpem = cert_pem(k, -7200, 3600), *err;
    apr_time_t na;
    unsigned i;

    ck_assert_ptr_null(rmsync_jwt_key_load(pool, cpem, key_pem(k, 0), &key));
    na = rmsync_jwt_key_not_after(key);
    ck_assert(na > apr_time_now() + apr_time_from_sec(3500));
    ck_assert(na < apr_time_now() + apr_time_from_sec(3700));
    ck_assert_int_eq(strlen(rmsync_jwt_key_thumbprint(key)), 40);
    for (i = 0; i < 40; i++) {
        ck_assert(strchr("0123456789ABCDEF", rmsync_jwt_key_thumbprint(key)[i]));
    }
    ck_assert_int_eq(strlen(rmsync_jwt_key_x5t_s256(key)), 43);

    err = rmsync_jwt_key_load(pool, cpem, key_pem(other, 0), &key);
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_nonnull(strstr(err, "does not belong"));
    ck_assert_ptr_null(key);
    err = rmsync_jwt_key_load(pool, cpem, key_pem(k, 1), &key);
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_nonnull(strstr(err, "passphrase"));
    err = rmsync_jwt_key_load(pool, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                              key_pem(k, 0), &key);
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_nonnull(strstr(err, "not a PEM certificate"));
    err = rmsync_jwt_key_load(pool, cpem, "garbage", &key);
    ck_assert_ptr_nonnull(strstr(err, "not a PEM private key"));
    ck_assert_ptr_nonnull(ec);
    err = rmsync_jwt_key_load(pool, cert_pem(ec, 0, 3600), key_pem(ec, 0), &key);
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_nonnull(strstr(err, "not an RSA key"));
    EVP_PKEY_free(k);
    EVP_PKEY_free(other);
    EVP_PKEY_free(ec);
}
END_TEST

static const char *write_tmp(const char *dir, const char *name, const char *text, mode_t mode)
{
    const char *path = apr_pstrcat(pool, dir, "/", name, NULL);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
    return path;
}

START_TEST(test_read_credentials_files)
{
    EVP_PKEY *k = rsa_key(), *other = rsa_key();
    char dir[] = "/tmp/rmsync-jwt-XXXXXX";
    const char *cpath, *kpath, *c = NULL, *kp = NULL, *err;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    cpath = write_tmp(dir, "cert.pem", cert_pem(k, 0, 3600), 0644);
    kpath = write_tmp(dir, "key.pem", key_pem(k, 0), 0600);
    ck_assert_ptr_null(rmsync_jwt_read_credentials(pool, cpath, kpath, &c, &kp));
    ck_assert_ptr_nonnull(strstr(c, "BEGIN CERTIFICATE"));
    ck_assert_ptr_nonnull(strstr(kp, "PRIVATE KEY"));

    chmod(kpath, 0644);                     /* world-readable: refused, as sshd does */
    err = rmsync_jwt_read_credentials(pool, cpath, kpath, &c, &kp);
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_nonnull(strstr(err, "0644"));
    ck_assert_ptr_nonnull(strstr(err, "too open"));
    chmod(kpath, 0640);                     /* group-readable too */
    err = rmsync_jwt_read_credentials(pool, cpath, kpath, &c, &kp);
    ck_assert_ptr_nonnull(err);
    ck_assert_ptr_nonnull(strstr(err, "too open"));
    chmod(kpath, 0400);
    ck_assert_ptr_null(rmsync_jwt_read_credentials(pool, cpath, kpath, &c, &kp));

    err = rmsync_jwt_read_credentials(pool, apr_pstrcat(pool, dir, "/nope.pem", NULL), kpath,
                                      &c, &kp);
    ck_assert_ptr_nonnull(strstr(err, "cannot read the certificate"));
    err = rmsync_jwt_read_credentials(pool, cpath, apr_pstrcat(pool, dir, "/nope.key", NULL),
                                      &c, &kp);
    ck_assert_ptr_nonnull(strstr(err, "cannot read the private key"));
    write_tmp(dir, "other.key", key_pem(other, 0), 0600);
    err = rmsync_jwt_read_credentials(pool, cpath, apr_pstrcat(pool, dir, "/other.key", NULL),
                                      &c, &kp);
    ck_assert_ptr_nonnull(strstr(err, "does not belong"));
    ck_assert_ptr_null(strstr(err, "PRIVATE KEY"));   /* never the key itself */

    unlink(cpath);
    unlink(kpath);
    unlink(apr_pstrcat(pool, dir, "/other.key", NULL));
    rmdir(dir);
    EVP_PKEY_free(k);
    EVP_PKEY_free(other);
}
END_TEST

RMSYNC_UNIT_MAIN("jwt", "core", setup, teardown, 60,
                 test_assertion_ps256, test_assertion_rs256, test_jti_unique_and_signature_bound,
                 test_load_details_and_errors, test_read_credentials_files)
