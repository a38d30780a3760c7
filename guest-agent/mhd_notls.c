/*
 * mhd_notls.c - lets the static hearth-agent link Debian's libmicrohttpd.a.
 *
 * Debian builds libmicrohttpd with HTTPS support, so libmicrohttpd.a refers to
 * GnuTLS. GnuTLS cannot be linked statically on Debian bookworm: it needs
 * p11-kit and libunistring, which ship no static archive. The agent never
 * asks MHD for TLS (runtime.c never passes MHD_USE_TLS: the Runtime API is
 * plain HTTP on the guest's loopback, as on Lambda), and every GnuTLS call in
 * libmicrohttpd but two sits behind that flag. So the symbols are resolved
 * here instead:
 *   - gnutls_global_init()/gnutls_global_deinit() are called by MHD's library
 *     constructor and destructor whatever the flags: they succeed and do
 *     nothing;
 *   - everything else is unreachable without MHD_USE_TLS, and aborts with a
 *     message if that ever changes, rather than run without TLS silently.
 * This is what building libmicrohttpd with --disable-https would give; the
 * list below is exactly what `nm -u libmicrohttpd.a | grep gnutls` names for
 * 0.9.75, and the link fails if a newer libmicrohttpd needs another symbol.
 * Only the static (non-sanitizer) build uses this file.
 */
#include <stdio.h>
#include <stdlib.h>

int gnutls_global_init(void);
void gnutls_global_deinit(void);

int gnutls_global_init(void)
{
	return 0;
}

void gnutls_global_deinit(void)
{
}

static void notls(const char *fn)
{
	fprintf(stderr, "hearth-agent: %s: libmicrohttpd asked for TLS, which the agent does not"
		" link\n", fn);
	abort();
}

/* gnutls_malloc is a variable (a function pointer) in GnuTLS. */
static void *notls_malloc(size_t n)
{
	(void)n;
	notls("gnutls_malloc");
	return NULL;
}
void *(*gnutls_malloc)(size_t) = notls_malloc;

#define NOTLS(name)              \
	void name(void);         \
	void name(void)          \
	{                        \
		notls(#name);    \
	}

NOTLS(gnutls_alpn_set_protocols)
NOTLS(gnutls_bye)
NOTLS(gnutls_certificate_allocate_credentials)
NOTLS(gnutls_certificate_free_credentials)
NOTLS(gnutls_certificate_server_set_request)
NOTLS(gnutls_certificate_set_dh_params)
NOTLS(gnutls_certificate_set_retrieve_function2)
NOTLS(gnutls_certificate_set_retrieve_function3)
NOTLS(gnutls_certificate_set_x509_key_mem)
NOTLS(gnutls_certificate_set_x509_key_mem2)
NOTLS(gnutls_certificate_set_x509_trust_mem)
NOTLS(gnutls_cipher_get)
NOTLS(gnutls_credentials_set)
NOTLS(gnutls_deinit)
NOTLS(gnutls_dh_params_deinit)
NOTLS(gnutls_dh_params_import_pkcs3)
NOTLS(gnutls_dh_params_init)
NOTLS(gnutls_handshake)
NOTLS(gnutls_init)
NOTLS(gnutls_priority_deinit)
NOTLS(gnutls_priority_init)
NOTLS(gnutls_priority_set)
NOTLS(gnutls_protocol_get_version)
NOTLS(gnutls_psk_allocate_server_credentials)
NOTLS(gnutls_psk_free_server_credentials)
NOTLS(gnutls_psk_set_server_credentials_function)
NOTLS(gnutls_record_check_pending)
NOTLS(gnutls_record_get_direction)
NOTLS(gnutls_record_recv)
NOTLS(gnutls_record_send)
NOTLS(gnutls_session_get_ptr)
NOTLS(gnutls_session_set_ptr)
NOTLS(gnutls_strerror)
NOTLS(gnutls_transport_set_int2)
