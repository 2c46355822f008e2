/* crypto/smime.h — S/MIME 4.0 (RFC 8551) message wrapping over the CMS
 * layer (crypto/cms.h): the MIME side of signing, encrypting, verifying
 * and decrypting whole RFC 5322 messages held in memory.
 *
 * Owns: splitting a message into its outer header (From, To, Subject,
 * Received, ... stay outside) and the MIME entity to protect (the content
 * fields Content-Type, Content-Transfer-Encoding, Content-Disposition,
 * Content-ID, Content-Description, plus the body; MIME-Version is dropped
 * from both and written once on the outside); the canonical form of that
 * entity (CRLF line ends, 7-bit: 8-bit or over-long leaves re-encoded to
 * quoted-printable or base64, RFC 8551 §3.1); the multipart/signed (RFC
 * 1847, RFC 8551 §3.5.3) and application/pkcs7-mime (§3.2) wrappers; the
 * classification and unwrapping of what peers send; the EFAIL policy for
 * unauthenticated (AES-CBC) content (§3.3 and crypto/cms.h).
 *
 * Sans-I/O: no file, socket or clock; keys are used only through struct
 * cms_signer; randomness only for MIME boundaries (opts may fix one).
 * Callers: the `postseal smime` CLI, the gateway stage of the daemon.
 *
 * Pointers: struct smime_parsed and smime_multipart point into the input
 * the caller passed and are valid while it is; everything else is copied
 * into struct buf owned by the result.
 *
 * Errors: functions return SMIME_OK (0) or a negative enum smime_err and
 * write a one-line reason to err. A peer's bad input is SMIME_ERR_SYNTAX or
 * SMIME_ERR_LIMIT; failed signatures are verdicts, not errors.
 *
 * Thread: no globals; every object belongs to one thread. */
#ifndef POSTSEAL_CRYPTO_SMIME_H
#define POSTSEAL_CRYPTO_SMIME_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "crypto/cms.h"

/* Hard limits, checked before the data is interpreted. */
#define SMIME_MAX_MESSAGE (64u << 20) /* bytes of one message or entity */
#define SMIME_MAX_HEADERS 1000        /* header fields of one header */
#define SMIME_MAX_FIELD 16384         /* bytes of one (folded) header field */
#define SMIME_MAX_DEPTH 8             /* nested multiparts */
#define SMIME_MAX_PARTS 1000          /* body parts of one multipart */
#define SMIME_MAX_LAYERS 4            /* S/MIME layers smime_open unwraps */
#define SMIME_MAX_LINE 998            /* octets of a line, CRLF excluded */
#define SMIME_MAX_BOUNDARY 70         /* RFC 2046 §5.1.1 */
#define SMIME_MAX_PARAMS 16           /* Content-Type parameters read */
#define SMIME_MAX_PARAM_VALUE 256     /* bytes of one parameter value */
#define SMIME_B64_LINE 76             /* base64 line length (RFC 2045) */
#define SMIME_MAX_ADDRESS 254 /* a From addr-spec (RFC 5321 §4.5.3.1) */

enum smime_err {
  SMIME_OK = 0,
  SMIME_ERR_SYNTAX = -1,          /* malformed MIME or base64 */
  SMIME_ERR_LIMIT = -2,           /* over a SMIME_MAX_* limit */
  SMIME_ERR_UNSUPPORTED = -3,     /* cannot be wrapped or unwrapped */
  SMIME_ERR_NOT_SMIME = -4,       /* no S/MIME layer where one was asked */
  SMIME_ERR_CMS = -5,             /* the CMS layer failed (reason in err) */
  SMIME_ERR_UNAUTHENTICATED = -6, /* CBC content without a valid signature */
  SMIME_ERR_INTERNAL = -7,        /* allocation failure */
};

/* smime_err_str names an error value ("syntax", "limit", ...). */
const char *smime_err_str(int err);

/* ---- header fields and Content-Type ------------------------------------ */

/* One header field as it appears: name and value (after the colon, with
 * its folding; leading whitespace and the final line break removed). */
struct smime_field {
  const uint8_t *name;
  size_t name_len;
  const uint8_t *value;
  size_t value_len;
  const uint8_t *raw; /* the whole field with its line break */
  size_t raw_len;
};

/* smime_header_parse reads the header fields at the start of in (LF or
 * CRLF line ends) into fields (up to max, more is SMIME_ERR_LIMIT) and
 * sets *out_body_off past the blank line (or to in_len when there is no
 * body). A header without a blank line ends the input. */
int smime_header_parse(struct smime_field *fields, size_t max, size_t *out_num,
                       size_t *out_body_off, const uint8_t *in, size_t in_len,
                       char *err, size_t err_len);

/* A parsed Content-Type (RFC 2045 §5.1): type and subtype lowercased. */
struct smime_ct {
  char type[32];
  char subtype[64];
  size_t num_params;
  struct {
    char name[32];                     /* lowercased */
    char value[SMIME_MAX_PARAM_VALUE]; /* unquoted */
  } params[SMIME_MAX_PARAMS];
};

/* smime_ct_parse parses a Content-Type value. A parameter name given
 * twice (RFC 2045 §5.1), or an RFC 2231 form (name*, name*0) of boundary,
 * protocol, micalg or smime-type, is SMIME_ERR_SYNTAX: readers differ on
 * which one counts. More than SMIME_MAX_PARAMS parameters, or a value too
 * long, is SMIME_ERR_LIMIT. */
int smime_ct_parse(struct smime_ct *out, const uint8_t *value, size_t value_len,
                   char *err, size_t err_len);
/* smime_ct_param returns the parameter's value (name case-insensitive), or
 * NULL. */
const char *smime_ct_param(const struct smime_ct *ct, const char *name);

/* smime_from_address writes to out the addr-spec of the From field of
 * msg's header, parsed as RFC 5322 §3.4 says: the header must have
 * exactly one From field, holding exactly one mailbox, either addr-spec
 * or [display-name] <addr-spec>; comments (nested, with quoted-pairs) and
 * quoted strings are read as such, so "<x@y>" inside either is never the
 * address. The local part is a dot-atom or a quoted-string (written bare
 * when its content is a dot-atom, else quoted), the domain a dot-atom or
 * a [literal]; ASCII only; obsolete forms (routes, obs-local-part) are
 * refused. The case is kept: compare case-insensitively.
 *
 * Returns SMIME_OK with a non-empty address in out, or an error with out
 * "" and the reason in err: SMIME_ERR_SYNTAX for no From field, more
 * than one, a group, a list, "<>" or anything else that does not parse;
 * SMIME_ERR_LIMIT for an address over SMIME_MAX_ADDRESS bytes or out_cap
 * - 1, or a header over its limits; SMIME_ERR_INTERNAL for memory. An
 * error means there is no From address to check a signer against: a
 * caller must treat it as a mismatch, never as "any signer". */
int smime_from_address(char *out, size_t out_cap, const uint8_t *msg,
                       size_t msg_len, char *err, size_t err_len);

/* ---- multipart bodies (RFC 2046 §5.1.1) -------------------------------- */

/* A reader of the body parts of one multipart body. Sticky: after an
 * error every call returns it. */
struct smime_multipart {
  const uint8_t *body;
  size_t body_len;
  char boundary[SMIME_MAX_BOUNDARY + 1];
  size_t boundary_len;
  size_t pos;          /* where the next part starts */
  int started;         /* the first delimiter was found */
  size_t preamble_len; /* bytes before the first delimiter line */
  int done;            /* the close delimiter was read */
  int err;             /* sticky error */
  size_t num_parts;
};

int smime_multipart_init(struct smime_multipart *mp, const char *boundary,
                         const uint8_t *body, size_t body_len, char *err,
                         size_t err_len);
/* smime_multipart_next returns 1 with the next part's exact bytes (RFC
 * 1847 §2.1: after the delimiter line's line break, up to and without the
 * line break before the next delimiter), 0 after the close delimiter, or
 * a negative smime_err. A delimiter line is "--" boundary, optional
 * transport padding (SP, HT), then CRLF (or LF); a close delimiter has
 * "--" after the boundary and may end the body without a line break. A
 * missing close delimiter, and a line that begins with "--" boundary but
 * is neither (RFC 2046 lets readers match the boundary as a prefix, so it
 * is ambiguous), are SMIME_ERR_SYNTAX. */
int smime_multipart_next(struct smime_multipart *mp, const uint8_t **out_part,
                         size_t *out_part_len, char *err, size_t err_len);

/* ---- splitting and canonical form -------------------------------------- */

/* smime_split copies msg's header, without the content fields and
 * MIME-Version, to out_outer (CRLF line ends, no blank line), and the
 * entity (content fields, blank line, body) to out_entity. A message
 * without Content-Type gets "text/plain; charset=us-ascii" (RFC 2045
 * §5.2); one with two Content-Type or two Content-Transfer-Encoding
 * fields is SMIME_ERR_SYNTAX. The entity keeps msg's bytes; smime_canon
 * makes it canonical. */
int smime_split(struct buf *out_outer, struct buf *out_entity,
                const uint8_t *msg, size_t msg_len, char *err, size_t err_len);

/* smime_canon appends the canonical form of entity to out: CRLF line ends
 * (a lone LF becomes CRLF) and a 7-bit body of lines of at most
 * SMIME_MAX_LINE octets: a leaf with 8-bit bytes, NUL, lone CR or long
 * lines is re-encoded (text/ to quoted-printable, others to base64;
 * RFC 8551 §3.1.2), inside multiparts too (up to SMIME_MAX_DEPTH). A
 * signed or encrypted entity (multipart/signed, application/pkcs7-mime)
 * and message/ entities that would need it are SMIME_ERR_UNSUPPORTED. */
int smime_canon(struct buf *out, const uint8_t *entity, size_t entity_len,
                char *err, size_t err_len);

/* smime_join appends outer (as smime_split made it), MIME-Version: 1.0 and
 * entity to out: a whole message again. Of the entity's header only the
 * Content-* fields are kept (CRLF line ends), so a From:,
 * Authentication-Results: or MIME-Version inside a decrypted or verified
 * entity never reaches the top-level header; its body is copied as it is.
 * Returns SMIME_OK; SMIME_ERR_SYNTAX or SMIME_ERR_LIMIT when the entity's
 * header does not parse or has two Content-Type or
 * Content-Transfer-Encoding fields; SMIME_ERR_INTERNAL. On error out is
 * unchanged. */
int smime_join(struct buf *out, const uint8_t *outer, size_t outer_len,
               const uint8_t *entity, size_t entity_len);

/* ---- base64 (RFC 2045 §6.8) -------------------------------------------- */

/* smime_b64_encode appends base64 in lines of SMIME_B64_LINE characters,
 * each ending in CRLF. */
int smime_b64_encode(struct buf *out, const uint8_t *in, size_t in_len);
/* smime_b64_decode appends the decoded bytes; whitespace (SP, HT, CR, LF)
 * is skipped anywhere, any other character outside the alphabet, a
 * misplaced '=' or data after the padding is SMIME_ERR_SYNTAX. */
int smime_b64_decode(struct buf *out, const uint8_t *in, size_t in_len);

/* ---- building ---------------------------------------------------------- */

struct smime_sign_opts {
  int opaque;           /* application/pkcs7-mime; smime-type=signed-data */
  int64_t signing_time; /* seconds since the epoch; < 0: none */
  int no_certs;
  int no_smime_attrs;
  X509 *enc_cert;       /* SMIMEEncryptionKeyPreference; NULL: own */
  const char *boundary; /* NULL: a fresh random one (tests fix it) */
};

/* smime_sign appends to out msg signed by every party: the outer header,
 * MIME-Version and multipart/signed (protocol application/pkcs7-signature,
 * micalg from the parties' digests, RFC 8551 §3.5.3.2) over the canonical
 * entity and smime.p7s, or with opts->opaque application/pkcs7-mime
 * (smime.p7m). On error out is unchanged. */
int smime_sign(struct buf *out, const struct cms_signer *signer,
               const struct cms_sign_party *parties, size_t num_parties,
               const struct smime_sign_opts *opts, const uint8_t *msg,
               size_t msg_len, char *err, size_t err_len);

/* smime_encrypt appends msg encrypted to every recipient: the outer
 * header, MIME-Version and application/pkcs7-mime (smime-type
 * authEnveloped-data for GCM, enveloped-data for CBC; smime.p7m).
 * Sign-then-encrypt is smime_encrypt of smime_sign's output. */
int smime_encrypt(struct buf *out, const struct cms_recipient *rcpts,
                  size_t num_rcpts, enum cms_cipher cipher, const uint8_t *msg,
                  size_t msg_len, char *err, size_t err_len);

/* ---- parsing and unwrapping -------------------------------------------- */

enum smime_kind {
  SMIME_KIND_NONE = 0, /* not S/MIME */
  SMIME_KIND_MULTIPART_SIGNED,
  SMIME_KIND_SIGNED_DATA,    /* application/pkcs7-mime signed-data */
  SMIME_KIND_ENVELOPED,      /* enveloped-data (AES-CBC) */
  SMIME_KIND_AUTH_ENVELOPED, /* authEnveloped-data (AES-GCM) */
};

/* "none", "multipart-signed", "signed-data", "enveloped-data",
 * "authEnveloped-data". */
const char *smime_kind_str(enum smime_kind k);

struct smime_parsed {
  enum smime_kind kind;
  /* multipart/signed: the first part's exact bytes (points into input) */
  const uint8_t *content;
  size_t content_len;
  struct buf der;  /* the decoded CMS object (p7s or p7m) */
  char micalg[64]; /* multipart/signed's micalg, lowercased, or "" */
};

/* smime_parse classifies msg (a message or an entity) by its
 * Content-Type: multipart/signed with protocol application/pkcs7-signature
 * (or x-pkcs7-signature), application/(x-)pkcs7-mime by the CMS content
 * type, which an smime-type, when given, must agree with
 * (SMIME_ERR_SYNTAX otherwise; an unknown smime-type is
 * SMIME_ERR_UNSUPPORTED); anything else is SMIME_KIND_NONE (SMIME_OK).
 * SMIME_KIND_ENVELOPED and SMIME_KIND_AUTH_ENVELOPED are only given for a
 * whole, well-formed EnvelopedData / AuthEnvelopedData
 * (cms_check_enveloped); otherwise SMIME_ERR_SYNTAX. Two Content-Type or
 * Content-Transfer-Encoding fields, or a repeated parameter, are
 * SMIME_ERR_SYNTAX. out is always initialised; release it with
 * smime_parsed_cleanup. */
int smime_parse(struct smime_parsed *out, const uint8_t *msg, size_t msg_len,
                char *err, size_t err_len);
void smime_parsed_cleanup(struct smime_parsed *p);

/* smime_verify_message checks one signed layer of msg (multipart/signed or
 * signed-data; the content is brought to CRLF line ends first, as the
 * signer canonicalised it), puts the verdicts in out_v and the signed
 * entity (exactly the bytes the verdicts cover) in out_entity. Returns
 * SMIME_OK when it parsed (verdicts in out_v), SMIME_ERR_NOT_SMIME if msg
 * is not signed. multipart/signed must carry a detached SignedData (one
 * with encapsulated content is SMIME_ERR_CMS: signature wrapping) and
 * signed-data one with content (SMIME_ERR_SYNTAX); an eContentType other
 * than id-data is SMIME_ERR_UNSUPPORTED (RFC 8551 §2.4.1). On error
 * out_v has no signers and nothing is appended to out_entity. out_v is
 * always initialised (cms_verified_cleanup). */
int smime_verify_message(struct cms_verified *out_v, struct buf *out_entity,
                         const struct cms_verify_opts *opts, const uint8_t *msg,
                         size_t msg_len, char *err, size_t err_len);

/* smime_decrypt_message decrypts one enveloped layer of msg into
 * out_entity; *out_authenticated is 1 for AuthEnvelopedData. The caller
 * applies the EFAIL policy (smime_open does). */
int smime_decrypt_message(struct buf *out_entity, int *out_authenticated,
                          const struct cms_signer *signer,
                          const struct cms_decrypt_party *parties,
                          size_t num_parties, const uint8_t *msg,
                          size_t msg_len, char *err, size_t err_len);

struct smime_open_opts {
  const struct cms_signer *signer; /* for decryption; NULL: cannot */
  const struct cms_decrypt_party *parties;
  size_t num_parties;
  struct cms_verify_opts verify;
  /* Return CBC-decrypted content whose next layer is not a validly signed
   * entity (EFAIL, RFC 8551 §3.3 / crypto/cms.h). Off by default. */
  int allow_unauthenticated;
};

struct smime_layer {
  enum smime_kind kind;
  int authenticated;            /* enveloped: AEAD; signed: all signers pass */
  struct cms_verified verified; /* signed layers */
};

struct smime_opened {
  size_t num_layers;
  struct smime_layer layers[SMIME_MAX_LAYERS];
  int encrypted;      /* some layer was enveloped */
  int auth_encrypted; /* every enveloped layer was AuthEnvelopedData */
  int signed_;        /* some layer was signed */
  int all_pass;       /* signed, and every signer of every layer passed */
  struct buf entity;  /* the innermost entity */
  struct buf message; /* msg's outer header joined with entity */
};

/* smime_open unwraps msg layer by layer (decrypt, verify, ...) up to
 * SMIME_MAX_LAYERS and reports what it saw. A layer it cannot open
 * (decryption failed, no key) is an error; a bad signature is a verdict.
 * With CBC content whose next layer is not a signed entity that passes,
 * it returns SMIME_ERR_UNAUTHENTICATED and no content unless
 * opts->allow_unauthenticated. A message with no S/MIME layer is
 * SMIME_ERR_NOT_SMIME. out is always initialised; release it with
 * smime_opened_cleanup. */
int smime_open(struct smime_opened *out, const struct smime_open_opts *opts,
               const uint8_t *msg, size_t msg_len, char *err, size_t err_len);
void smime_opened_cleanup(struct smime_opened *o);

#endif
