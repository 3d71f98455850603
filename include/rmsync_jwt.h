/* mod_rmsync: certificate credentials for the token request (rmsync_jwt.c).
 *
 * RMSyncGraphClientCertificate <cert.pem> <key.pem>: the httpd parent reads and checks both
 * files at configtest (rmsync_jwt_read_credentials); the sync runner loads the PEM it was handed
 * (rmsync_jwt_key_load) and signs one client assertion per token request
 * (rmsync_jwt_client_assertion): a JWT with x5t#S256, aud = token endpoint, iss = sub = client
 * id, a random jti and a 10 minute lifetime. OpenSSL's EVP API; RSA keys (Entra ID's rule).
 */
#ifndef RMSYNC_JWT_H
#define RMSYNC_JWT_H

#include <apr_pools.h>
#include <apr_time.h>

typedef struct rmsync_jwt_key_t rmsync_jwt_key_t;

typedef enum {
    RMSYNC_JWT_PS256 = 0,   /* RSASSA-PSS, SHA-256, salt = digest length (the default) */
    RMSYNC_JWT_RS256        /* RSASSA-PKCS1-v1_5, SHA-256 */
} rmsync_jwt_alg_e;

#define RMSYNC_JWT_LIFETIME_S 600
#define RMSYNC_JWT_MAX_PEM    (64 * 1024)

/* Read the certificate and private key files (PEM) and check them: a certificate, an RSA key
 * without a passphrase that belongs to it, a key file not accessible by group or others (like
 * sshd). NULL and the PEM texts (never logged) on success, else an error text from p. */
const char *rmsync_jwt_read_credentials(apr_pool_t *p, const char *cert_path,
                                        const char *key_path, const char **cert_pem,
                                        const char **key_pem);

/* Parse a certificate and its private key (PEM texts). NULL on success, else an error text.
 * The OpenSSL objects are freed with p. */
const char *rmsync_jwt_key_load(apr_pool_t *p, const char *cert_pem, const char *key_pem,
                                rmsync_jwt_key_t **out);

/* The certificate's notAfter. */
apr_time_t rmsync_jwt_key_not_after(const rmsync_jwt_key_t *k);
/* The SHA-1 thumbprint in upper-case hex, as the Entra admin center shows it. */
const char *rmsync_jwt_key_thumbprint(const rmsync_jwt_key_t *k);
/* base64url(SHA-256 of the certificate's DER): the x5t#S256 header. */
const char *rmsync_jwt_key_x5t_s256(const rmsync_jwt_key_t *k);

/* A signed client assertion in p (header.claims.signature, base64url). APR_SUCCESS, or an
 * error status (OpenSSL failure, no randomness). */
apr_status_t rmsync_jwt_client_assertion(apr_pool_t *p, const rmsync_jwt_key_t *k,
                                         rmsync_jwt_alg_e alg, const char *client_id,
                                         const char *audience, apr_time_t now,
                                         const char **out);

#endif /* RMSYNC_JWT_H */
