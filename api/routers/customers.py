from fastapi import APIRouter

router = APIRouter(prefix="/v0/customers", tags=["customers"])
