import httpx


def test_fhir(fhir_server):
    r = httpx.get(fhir_server.base_url + "/metadata")
    assert r.json()["resourceType"] == "CapabilityStatement"


def test_orthanc(orthanc):
    r = httpx.get(orthanc.dicomweb_url + "/studies")
    assert r.status_code in (200, 204), r.text
